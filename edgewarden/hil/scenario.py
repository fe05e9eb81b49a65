"""HIL scenario files (TOML): the plant, the gateway, a timeline, invariants and budgets.

```toml
[scenario]
name = "cstr-estop-reset"
description = "operator e-stop, reset, start"
duration_s = 20.0            # timeline length, counted from t = 0 (the gateway in AUTO)
skip = "why"                 # optional: the bench reports the scenario as skipped
expect_fail = ["rate"]       # optional: these invariants must FAIL ("this should fail")

[plant]
name = "cstr"                # a twin the bench starts in-process (faults available) ...
time_scale = 5.0
watchdog_ms = 500
# [plant.external]           # ... or a real PLC: nothing is started, nothing injected
# opcua = "opc.tcp://10.0.0.5:4840"

[gateway]
config = "../../examples/cstr.toml"   # relative to this file
model = "../../models/cstr_baseline.onnx"
cycle_hz = 20.0              # optional override
start = true                 # send `start` once READY (t = 0 is when AUTO is reached)
# [gateway.set]              # optional: config keys (dotted paths) set for this run only
# "tags.T.freeze_s" = 1.0

[[events]]
at = 5.0
kind = "estop"               # see EVENT_KINDS

[invariants]                 # every key optional; absent = not checked
estop_reaction_ms = 300
expect_modes = ["ESTOP"]
```
Unknown keys and kinds are errors naming the file and the key (ConfigError).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgewarden.gateway.errors import ConfigError

# kind -> (required params, optional params)
EVENT_KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "setpoint": (("tag", "value"), ()),           # write a PLC tag (operator at the HMI)
    "disturbance": (("name", "value"), ()),       # plant disturbance (twin only)
    "fault": (("fault",), ("target", "params")),  # twin fault injection (twin only)
    "clear_faults": ((), ()),                     # clear every active twin fault
    "estop": ((), ("reason",)),                   # operator e-stop over the control socket
    "reset": ((), ()),
    "start": ((), ()),
    "manual": ((), ("setpoints",)),               # operator override
    "auto": ((), ()),                             # operator hand-back
    "plc_estop": ((), ()),                        # the PLC's hardwired e-stop (estop_cmd)
    "plc_estop_release": ((), ()),
    "plc_reset": ((), ()),                        # pulse the PLC's reset_cmd
    "hand": ((), ()),                             # PLC selector to hand (auto = false)
    "hand_back": ((), ()),                        # PLC selector back to auto
    "kill_gateway": (("signal",), ()),            # "KILL" or "TERM"
    "model_swap": (("model",), ()),               # needs the gateway's model commands
}
TWIN_ONLY = {"disturbance", "fault", "clear_faults", "plc_estop", "plc_estop_release", "plc_reset",
             "hand", "hand_back"}
# events after which the e-stop reaction time is measured
ESTOP_TRIGGERS = {"estop", "plc_estop"}

INVARIANT_KEYS = {
    "actions_within_limits": bool,   # bounds and rate limits, at the PLC and in the audit
    "no_write_manual_estop": bool,
    "audit": bool,                   # chain verifies, covers every cycle
    "estop_reaction_ms": float,      # trigger -> safe setpoints at the PLC
    "heartbeat_loss_ms": float,      # gateway gone -> PLC safe state
    "reconnect_s": float,            # server restart/drop -> heartbeat moving again
    "deadline_miss_rate": float,     # misses / cycles
    "expect_modes": list,            # modes the audit log must show
    "expect_trips": list,            # trip code prefixes the audit log must show
    "events_ok": bool,               # every event was carried out / accepted
}
DEFAULT_INVARIANTS: dict[str, Any] = {
    "actions_within_limits": True, "no_write_manual_estop": True, "audit": True, "events_ok": True,
    "deadline_miss_rate": 0.10,  # a shared 2-core CI box misses some; tighten on a real bench
}


@dataclass
class Event:
    at: float
    kind: str
    params: dict[str, Any] = field(default_factory=dict)

    def label(self) -> str:
        bits = [f"{k}={v}" for k, v in self.params.items() if k not in ("params",)]
        return self.kind + (f" ({', '.join(bits)})" if bits else "")


@dataclass
class Scenario:
    path: Path
    name: str
    description: str
    duration_s: float
    plant: str
    twin: bool
    twin_options: dict[str, Any]
    external: dict[str, str]
    config: Path
    model: Path | None
    cycle_hz: float | None
    start: bool
    settings: dict[str, Any]  # [gateway.set]: dotted config key -> value, for this run
    events: list[Event]
    invariants: dict[str, Any]
    skip: str | None = None
    expect_fail: list[str] = field(default_factory=list)


def _err(path: Path, key: str, what: str) -> ConfigError:
    return ConfigError(f"{path}: {key}: {what}")


def _take(path: Path, section: str, table: Any, allowed: dict[str, type | tuple[type, ...]],
          required: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise _err(path, section, "expected a table")
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise _err(path, f"{section}.{unknown[0]}", f"unknown key (allowed: {', '.join(sorted(allowed))})")
    for key in required:
        if key not in table:
            raise _err(path, f"{section}.{key}", "required")
    for key, value in table.items():
        want = allowed[key]
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            continue
        if not isinstance(value, want) or (isinstance(value, bool) and want in (int, float)):
            raise _err(path, f"{section}.{key}", f"expected {getattr(want, '__name__', want)}, got {value!r}")
    return table


def load_scenario(path: Path | str) -> Scenario:
    path = Path(path).resolve()
    try:
        doc = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the scenario: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    _take(path, "(top level)", doc, {"scenario": dict, "plant": dict, "gateway": dict,
                                     "events": list, "invariants": dict}, ("scenario", "plant", "gateway"))
    sc = _take(path, "scenario", doc["scenario"], {"name": str, "description": str, "duration_s": float,
                                                   "skip": str, "expect_fail": list}, ("name", "duration_s"))
    pl = _take(path, "plant", doc["plant"], {"name": str, "time_scale": float, "watchdog_ms": float,
                                             "scan_ms": float, "seed": int, "external": dict}, ("name",))
    gw = _take(path, "gateway", doc["gateway"], {"config": str, "model": str, "cycle_hz": float,
                                                 "start": bool, "set": dict}, ("config",))
    base = path.parent
    external = dict(pl.get("external") or {})
    _take(path, "plant.external", external, {"opcua": str})
    if "external" in pl and "opcua" not in external:
        raise _err(path, "plant.external.opcua", "required for an external PLC")
    events = []
    for i, raw in enumerate(doc.get("events", [])):
        where = f"events[{i}]"
        if not isinstance(raw, dict):
            raise _err(path, where, "expected a table")
        kind = raw.get("kind")
        if kind not in EVENT_KINDS:
            raise _err(path, f"{where}.kind", f"unknown event kind {kind!r} (one of {', '.join(EVENT_KINDS)})")
        req, opt = EVENT_KINDS[kind]
        allowed: dict[str, Any] = {"at": float, "kind": str, **{k: object for k in req + opt}}
        _take(path, where, raw, allowed, ("at", *req))
        if external and kind in TWIN_ONLY:
            raise _err(path, f"{where}.kind", f"{kind!r} needs a twin; this scenario runs against an external PLC")
        params = {k: v for k, v in raw.items() if k not in ("at", "kind")}
        if kind == "model_swap":
            params["model"] = str((base / str(params["model"])).resolve())
        events.append(Event(float(raw["at"]), kind, params))
    events.sort(key=lambda e: e.at)
    inv = dict(DEFAULT_INVARIANTS)
    inv.update(_take(path, "invariants", doc.get("invariants", {}), INVARIANT_KEYS))
    for k in ("expect_modes", "expect_trips"):
        if k in inv and not all(isinstance(x, str) for x in inv[k]):
            raise _err(path, f"invariants.{k}", "expected a list of strings")
    duration = float(sc["duration_s"])
    if duration <= 0:
        raise _err(path, "scenario.duration_s", "must be > 0")
    late = [e for e in events if e.at > duration]
    if late:
        raise _err(path, "events", f"event {late[0].kind!r} at {late[0].at} s is after duration_s = {duration}")
    return Scenario(
        path=path, name=sc["name"], description=sc.get("description", ""), duration_s=duration,
        plant=pl["name"], twin=not external,
        twin_options={k: pl[k] for k in ("time_scale", "watchdog_ms", "scan_ms", "seed") if k in pl},
        external=external, config=(base / gw["config"]).resolve(),
        model=(base / gw["model"]).resolve() if "model" in gw else None,
        cycle_hz=float(gw["cycle_hz"]) if "cycle_hz" in gw else None,
        start=gw.get("start", True), settings=dict(gw.get("set", {})), events=events, invariants=inv, skip=sc.get("skip"),
        expect_fail=[str(x) for x in sc.get("expect_fail", [])],
    )
