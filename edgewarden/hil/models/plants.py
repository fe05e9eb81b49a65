"""Gateway configs and proportional policies for the tanks and HVAC twins, for the bench.

``python -m edgewarden.hil.models.plants`` (train extra) writes ``edgewarden/hil/configs/<plant>.toml`` and
``edgewarden/hil/models/<plant>_p.onnx``. The configs map every tag of the twin (docs/twins.md) and
take their limits from the plant's objective, their safe values from the plant's safe
action; the policies are plain proportional controllers (levels: pumps; zone: heating),
good enough to drive the bench, not tuned products.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgewarden.gateway.policy.contract import PolicyContract
from edgewarden.gateway.tomlwrite import dumps_toml
from edgewarden.simulators.plants import make_plant

HERE = Path(__file__).resolve().parent
CONFIGS = HERE.parent / "configs"

# plant -> (policy actions, rate limits per second, proportional law: (action, pv, sp, gain, bias))
PLANTS: dict[str, dict[str, Any]] = {
    "tanks": {"actions": ["pump1", "pump2"], "rates": {"pump1": 2.0, "pump2": 2.0},
              "law": [("pump1", "h1", "h1_sp", 0.6, 3.0), ("pump2", "h2", "h2_sp", 0.6, 3.0)],
              "stale_ms": 1000},
    "hvac": {"actions": ["heating", "cooling", "ventilation"],
             "rates": {"heating": 3.0, "cooling": 3.0, "ventilation": 200.0},
             "law": [("heating", "T_zone", "T_zone_sp", 3.0, 6.0), ("cooling", "T_zone", "T_zone_sp", 0.0, 0.0),
                     ("ventilation", "T_zone", "T_zone_sp", 0.0, 600.0)],
             "stale_ms": None},  # CO2/T_zone sit still in the safe state: a twin stamps only changes
}


def _tag(plant: str, name: str, sig: Any = None, **kw: Any) -> dict[str, Any]:
    t: dict[str, Any] = {"connection": "plc1", "node": f"ns=2;s={plant}.{name}"}
    if sig is not None:
        t.update(units=sig.units, range=[float(sig.low), float(sig.high)])
    t.update(kw)
    return t


def config(plant: str) -> dict[str, Any]:
    spec = make_plant(plant).spec
    p = PLANTS[plant]
    tags: dict[str, Any] = {}
    for s in spec.observations:
        extra = {} if p["stale_ms"] is None else {"stale_ms": p["stale_ms"]}
        tags[s.name] = _tag(plant, s.name, s, **extra, description=s.description)
    for s in spec.targets:
        tags[s.name] = _tag(plant, s.name, s, description=s.description)
    for s in spec.actions:
        if s.name in p["actions"]:
            tags[s.name] = _tag(plant, s.name, s, description=f"{s.description} (applied)")
            tags[f"{s.name}_sp"] = _tag(plant, f"{s.name}_sp", s, writable=True)
    tags["plc_estop"] = _tag(plant, "estop", datatype="bool")
    tags["plc_auto"] = _tag(plant, "auto", datatype="bool")
    tags["plc_remote"] = _tag(plant, "remote", datatype="bool")
    tags["plc_watchdog"] = _tag(plant, "watchdog_tripped", datatype="bool")
    tags["heartbeat"] = _tag(plant, "heartbeat", datatype="uint32", writable=True)
    limits: dict[str, Any] = {}
    for lim in spec.objective.limits:
        sig = next(s for s in spec.observations if s.name == lim.name)
        hard = [max(lim.hard_low, sig.low), min(lim.hard_high, sig.high)]
        entry: dict[str, Any] = {"hard": hard}
        if lim.soft_low is not None or lim.soft_high is not None:
            entry["soft"] = [lim.soft_low if lim.soft_low is not None else hard[0],
                             lim.soft_high if lim.soft_high is not None else hard[1]]
        limits[lim.name] = entry
    safe = dict(zip([a.name for a in spec.actions], spec.safe_action))
    actions = {f"{s.name}_sp": {"min": float(s.low), "max": float(s.high), "max_rate": p["rates"][s.name],
                                "safe": float(safe[s.name]), "applied": s.name}
               for s in spec.actions if s.name in p["actions"]}
    obs = [s.name for s in spec.observations] + [s.name for s in spec.targets]
    return {
        "gateway": {"name": f"{plant}-hil", "cycle_hz": 10.0, "auto_start": False,
                    "max_consecutive_overruns": 5, "comms_timeout_ms": 1000},
        "connections": {"plc1": {"type": "opcua", "url": "opc.tcp://127.0.0.1:4840", "timeout_s": 2.0}},
        "tags": tags,
        "policy": {"path": f"../models/{plant}_p.onnx", "observations": obs,
                   "actions": [f"{a}_sp" for a in p["actions"]]},
        "safety": {"heartbeat_tag": "heartbeat", "estop_input": "plc_estop", "hand_auto_tag": "plc_auto",
                   "plc_remote_tag": "plc_remote", "plc_watchdog_tag": "plc_watchdog", "policy_fault": "fallback", "limits": limits, "actions": actions,
                   "fallback": {"controller": "hold"}},
        "audit": {"dir": "../../var/hil-audit", "commit_interval_ms": 10},
        "metrics": {"enabled": True, "host": "127.0.0.1", "port": 0},
        "control": {"socket": "../../var/hil-control.sock"},
        "logging": {"level": "info", "format": "console"},
    }


def policy(plant: str) -> bytes:
    from edgewarden.training.onnx_graph import build_linear_policy

    spec = make_plant(plant).spec
    p = PLANTS[plant]
    sigs = list(spec.observations) + list(spec.targets)
    obs = [s.name for s in sigs]
    acts = [s for s in spec.actions if s.name in p["actions"]]
    weight = np.zeros((len(acts), len(obs)))
    bias = np.zeros(len(acts))
    for i, a in enumerate(acts):
        _, pv, sp, gain, b = next(x for x in p["law"] if x[0] == a.name)
        weight[i, obs.index(pv)] = -gain
        weight[i, obs.index(sp)] = gain
        bias[i] = b
    contract = PolicyContract(
        observation_tags=tuple(obs), observation_units=tuple(s.units for s in sigs),
        action_tags=tuple(f"{a.name}_sp" for a in acts), action_units=tuple(a.units for a in acts),
        action_low=tuple(float(a.low) for a in acts), action_high=tuple(float(a.high) for a in acts),
        algorithm="proportional-hil", dataset_hash="none (hand-set gains for the HIL bench)",
        training_config={"law": [list(x) for x in p["law"]]}, input_name="obs", output_name="action")
    return build_linear_policy(contract, weight, bias)


def main() -> None:
    from edgewarden.training.onnx_graph import write_model

    CONFIGS.mkdir(exist_ok=True)
    for plant in PLANTS:
        path = CONFIGS / f"{plant}.toml"
        path.write_text(f"# {plant} twin, for the HIL bench. Generated by python -m edgewarden.hil.models.plants\n"
                        + dumps_toml(config(plant)))
        print(path, write_model(HERE / f"{plant}_p.onnx", policy(plant)))


if __name__ == "__main__":
    main()
