"""``edgewarden demo``: the CSTR twin and the real daemon on loopback, ~40 s, narrated.

Both run as subprocesses, exactly as an operator would start them (``edgewarden twin
serve`` and ``edgewarden run``). Two policies run: the shipped learned CSTR policy
(``cstr_iql.onnx``) and the hand-tuned P baseline (``cstr_baseline.onnx``). The one that
scored higher on the twin when the learned one was shipped (both in its manifest, measured
by ``train ship`` on the same episodes) is active, the other runs in shadow beside it on
the same inputs, never written; the summary says how often they agreed. The demo plays
the plant operator: it waits for READY, starts the gateway, changes the temperature
setpoint at the PLC, presses the e-stop, resets, starts again, and finally stops the
daemon and checks that the PLC's dead-man timer took the plant to its safe state. Then it
verifies the audit chain.

After the e-stop the reactor is colder than anything the learned policy was trained on:
it hands control to the fallback (the PID on the coolant, the nominal feed), which brings
the reactor back; once the plant is in the policy's support again it takes control back
(docs/safety.md). The run goes on until that has happened (at most ``HAND_BACK_WAIT_S``
longer), so the demo shows the whole story.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asyncua import Client, ua

from edgewarden.data import MODELS
from edgewarden.gateway.errors import GatewayError
from edgewarden.gateway.example_config import SHIPPED_MODEL, adapt_example
from edgewarden.gateway.ops.control import send_command

ACTOR = "demo-operator"
TIME_SCALE = 5.0  # the reactor's dynamics take minutes: run the twin 5x faster than real time
LEARNED = MODELS / "cstr_iql.onnx"
HAND_BACK_WAIT_S = 60.0  # after the restart, how much longer the run may wait for the hand-back
# the demo's fallback also restores the nominal feed (the example's holds the last one: after
# an e-stop that is none, and a cold reactor never comes back to where the policy was trained)
FALLBACK_FEED = """
[safety.fallback.pid.feed_flow_sp]   # the nominal feed, constant
pv = "T"
setpoint = 0.0
kp = 0.0
bias = 100.0
"""


@dataclass(frozen=True)
class Roles:
    """Which policy drives and which runs in shadow, and why."""

    active: Path
    shadow: Path | None
    why: str


def choose_roles(baseline: Path = SHIPPED_MODEL, learned: Path = LEARNED) -> Roles:
    """The learned policy drives when its manifest says it beat the baseline on the twin."""
    if not learned.exists():
        return Roles(baseline, None, f"the baseline drives ({learned.name} is not installed)")
    try:
        m = json.loads(Path(str(learned) + ".json").read_text())
        ours, theirs = float(m["evaluation"]["normalized_score"]), float(m["baseline"]["normalized_score"])
    except (OSError, ValueError, KeyError, TypeError):
        return Roles(baseline, learned, f"the baseline drives, {learned.name} runs in shadow (its manifest has no "
                                        "twin score beside the baseline's)")
    if ours > theirs and float(m["evaluation"].get("violation_rate", 1.0)) == 0.0:
        return Roles(learned, baseline, f"{learned.name} scored {ours:.1f} on the twin against the baseline's "
                                        f"{theirs:.1f}: it drives, the baseline runs in shadow")
    return Roles(baseline, learned, f"{learned.name} scored {ours:.1f} on the twin against the baseline's "
                                    f"{theirs:.1f}: the baseline drives, the learned policy runs in shadow")


@dataclass
class DemoResult:
    cycles: int = 0
    deadline_misses: int = 0
    trips: int = 0
    max_cycle_ms: float = 0.0
    audit_records: int = 0
    audit_ok: bool = False
    audit_message: str = ""
    plc_safe_after_stop: bool = False
    active: str = ""
    shadow: str = ""
    shadow_cycles: int = 0
    shadow_agreeing: int = 0  # cycles whose shadow proposal was within the shadow tolerance of the active one
    shadow_divergence_p50: dict[str, float] = field(default_factory=dict)  # per action, median |shadow - active|
    max_uncertainty: float = float("nan")  # the active model's, where it has the output
    fallbacks: list[str] = field(default_factory=list)  # why control went to the fallback, each time
    handed_back: bool = False  # the learned policy took control back after a hand-over
    events: list[str] = field(default_factory=list)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgewarden.gateway.cli", *args]


def _wait_file(path: Path, proc: subprocess.Popen[bytes], what: str, log: Path, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return json.loads(path.read_text())
        if proc.poll() is not None:
            raise GatewayError(f"the {what} exited with code {proc.returncode} before it was ready; "
                               f"its log: {log}\n{_tail(log)}")
        time.sleep(0.05)
    raise GatewayError(f"the {what} was not ready within {timeout:.0f} s; its log: {log}")


def _tail(log: Path, lines: int = 8) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    return ""


@contextlib.contextmanager
def _process(cmd: list[str], log: Path, cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _num(x: float | None, scale: float, width: int, decimals: int) -> str:
    if x is None or x != x:
        return "-".rjust(width)
    return f"{x * scale:{width}.{decimals}f}"


class _Narrator:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.tty = sys.stdout.isatty()
        self._last_line = 0.0

    def event(self, text: str) -> None:
        self._clear()
        print(f"[{time.monotonic() - self.t0:5.1f} s] {text}", flush=True)

    def status(self, st: dict[str, Any]) -> None:
        v, a = st["values"], st["action"]
        line = (f"[{time.monotonic() - self.t0:5.1f} s] mode={st['mode']:<9} "
                f"cycle={_num(st['stats']['last_cycle_s'], 1000, 5, 2)} ms  T={_num(v['T'], 1, 7, 2)} K  "
                f"T_sp={_num(v['T_sp'], 1, 6, 1)} K  coolant={_num(a['coolant_flow_sp'], 1, 6, 1)} L/min  "
                f"feed={_num(a['feed_flow_sp'], 1, 6, 1)} L/min  cycles={st['stats']['cycles']}")
        if self.tty:
            print("\r" + line, end="", flush=True)
        elif time.monotonic() - self._last_line >= 2.0:
            print(line, flush=True)
            self._last_line = time.monotonic()

    def _clear(self) -> None:
        if self.tty:
            print("\r" + " " * 140 + "\r", end="")


async def _plc_write(url: str, node: str, value: Any, vtype: ua.VariantType) -> None:
    async with Client(url=url, timeout=2.0) as client:
        await client.get_node(node).write_value(ua.DataValue(ua.Variant(value, vtype)))


async def _plc_read(url: str, nodes: list[str]) -> list[Any]:
    async with Client(url=url, timeout=2.0) as client:
        return await client.read_values([client.get_node(n) for n in nodes])


async def _drive(sock: Path, opcua_url: str, seconds: float, gateway: subprocess.Popen[bytes],
                 say: _Narrator, result: DemoResult, shadow: Path | None) -> dict[str, Any]:
    # The operator's script, as fractions of the run.
    script = [(0.20, "setpoint"), (0.45, "estop"), (0.62, "reset"), (0.70, "start")]
    started = False
    last: dict[str, Any] = {}
    t_start = time.monotonic()
    handed_over = handed_back = False
    end = seconds  # of the run: longer while a hand-back is awaited, and a little after it
    while time.monotonic() - t_start < end:
        if gateway.poll() is not None:
            raise GatewayError(f"the gateway exited early with code {gateway.returncode}")
        with contextlib.suppress(GatewayError):
            last = await send_command(sock, {"cmd": "status"})
        if not last.get("ok"):
            await asyncio.sleep(0.2)
            continue
        if not started and last["mode"] == "READY":
            reply = await send_command(sock, {"cmd": "start", "actor": ACTOR})
            say.event(f"operator: start → {reply.get('mode', reply.get('error'))}")
            started = True
            if shadow is not None:
                reply = await send_command(sock, {"cmd": "model", "action": "shadow", "actor": ACTOR,
                                                  "path": str(shadow)})
                say.event(f"operator: shadow {shadow.name} → " + ("runs beside the active policy" if reply.get("ok")
                                                                    else str(reply.get("error"))))
        frac = (time.monotonic() - t_start) / seconds
        while script and frac >= script[0][0]:
            _, what = script.pop(0)
            if what == "setpoint":
                await _plc_write(opcua_url, "ns=2;s=cstr.T_sp", 354.0, ua.VariantType.Double)
                say.event("operator at the PLC: temperature setpoint 350 → 354 K")
            else:
                reason = {"estop": "demo: operator presses the e-stop",
                          "reset": "demo: the drill is over, the plant is healthy"}.get(what, "demo")
                reply = await send_command(sock, {"cmd": what, "actor": ACTOR, "reason": reason})
                say.event(f"operator: {what} → {reply.get('mode') or reply.get('error')}")
            result.events.append(what)
            last = {}
        if last:
            if last.get("mode") == "FALLBACK" and not handed_over:
                handed_over = True
                end = seconds + HAND_BACK_WAIT_S
                say.event("the learned policy hands control to the fallback: "
                          + str((last.get("fallback") or {}).get("reason", "")))
            elif last.get("mode") == "AUTO" and handed_over and not handed_back:
                handed_back = True
                result.handed_back = True
                end = max(seconds, time.monotonic() - t_start + 4.0)  # a few seconds of it driving again
                say.event("the plant is in the learned policy's support again: it takes control back")
            say.status(last)
        await asyncio.sleep(0.25)
    say._clear()
    return last


def run_demo(seconds: float = 30.0, workdir: Path | None = None) -> int:
    from edgewarden.gateway.audit.verify import verify

    if not SHIPPED_MODEL.exists():
        raise GatewayError(f"the demo policy {SHIPPED_MODEL} is missing; rebuild it with "
                           f"`edgewarden train baseline cstr --out {SHIPPED_MODEL}`")
    roles = choose_roles()
    logging.getLogger("asyncua").setLevel(logging.ERROR)  # revised-parameter notices
    keep = workdir is not None
    wd = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="edgewarden-demo-"))
    wd.mkdir(parents=True, exist_ok=True)
    say = _Narrator()
    result = DemoResult()
    ready_file = wd / "twin.json"
    ready_file.unlink(missing_ok=True)
    env_note = f"workdir {wd}" + ("" if keep else " (removed at the end; keep it with --workdir)")
    print(f"edgewarden demo: CSTR twin + gateway on loopback for {seconds:.0f} s, {env_note}")
    print(f"policies: {roles.why}")
    result.active, result.shadow = roles.active.name, roles.shadow.name if roles.shadow else ""
    try:
        with _process(_cli("twin", "serve", "cstr", "--opcua", "127.0.0.1:0", "--modbus", "127.0.0.1:0",
                           "--time-scale", str(TIME_SCALE), "--ready-file", str(ready_file)), wd / "twin.log", wd) as twin:
            info = _wait_file(ready_file, twin, "twin", wd / "twin.log")
            url = info["opcua_url"]
            say.event(f"twin up: OPC UA {url}, Modbus 127.0.0.1:{info['modbus_port']}, "
                      f"plant time {TIME_SCALE:g}x real time")
            config = adapt_example(wd, opcua_url=url, audit_dir="audit", socket="control.sock", policy=roles.active,
                                   replace={r"^\[safety\.fallback\.pid\.coolant_flow_sp\]":
                                            FALLBACK_FEED.strip() + "\n\n[safety.fallback.pid.coolant_flow_sp]"})
            with _process(_cli("run", "--config", str(config)), wd / "gateway.log", wd) as gw:
                say.event(f"gateway starting (log: {wd / 'gateway.log'})")
                last = asyncio.run(_drive(wd / "control.sock", url, seconds, gw, say, result, roles.shadow))
                gw.send_signal(signal.SIGTERM)
                code = gw.wait(timeout=15)
                say.event(f"gateway stopped (exit {code}); waiting for the PLC's dead-man timer")
            stats = last.get("stats", {})
            result.cycles = int(stats.get("cycles", 0))
            result.deadline_misses = int(stats.get("deadline_misses", 0))
            result.max_cycle_ms = float(stats.get("max_cycle_s", 0.0)) * 1000
            result.trips = int(last.get("trips", 0))
            time.sleep(1.0)
            remote, coolant, feed = asyncio.run(_plc_read(
                url, ["ns=2;s=cstr.remote", "ns=2;s=cstr.coolant_flow", "ns=2;s=cstr.feed_flow"]))
            result.plc_safe_after_stop = (not remote) and feed == 0.0
            say.event(f"PLC after the gateway stopped: remote={remote}, coolant={coolant:.0f} L/min, "
                      f"feed={feed:.0f} L/min")
        verdict = verify(wd / "audit")
        _read_decisions(wd / "audit", config, result)
        result.audit_records = verdict.records
        result.audit_ok = verdict.ok
        result.audit_message = (f"chain intact, head {verdict.head[:16]}…" if verdict.ok
                                else f"BROKEN: {verdict.error}")
    finally:
        if not keep:
            shutil.rmtree(wd, ignore_errors=True)
    _summary(result)
    ok = result.audit_ok and result.plc_safe_after_stop and result.cycles > 0
    return 0 if ok else 1


def _read_decisions(audit: Path, config: Path, r: DemoResult) -> None:
    """What the audit log says the two policies did: agreement with the shadow (the
    registry's own rule: every action within its shadow tolerance), the active model's
    largest uncertainty, the hand-overs to the fallback."""
    import numpy as np

    from edgewarden.gateway.audit.verify import iter_records
    from edgewarden.gateway.config import load_config
    from edgewarden.gateway.policy.registry import shadow_tolerances

    settings = load_config(config).settings
    tol = shadow_tolerances(settings)
    divergence, unc = [], []
    for rec in iter_records(audit):
        p = rec.payload
        kind = p.get("kind")
        if kind == "mode" and p.get("to") == "FALLBACK":
            r.fallbacks.append(str(p.get("reason")))
        if kind != "cycle":
            continue
        if isinstance(p.get("unc"), (int, float)):
            unc.append(float(p["unc"]))
        sh = p.get("shadow")
        if sh and sh.get("proposed") is not None and p.get("proposed") is not None:
            d = np.abs(np.asarray(sh["proposed"]) - np.asarray(p["proposed"]))
            r.shadow_cycles += 1
            r.shadow_agreeing += int((d <= tol).all())
            divergence.append(d)
    if divergence:
        med = np.median(np.asarray(divergence), axis=0)
        r.shadow_divergence_p50 = {a: round(float(v), 2) for a, v in zip(settings.policy.actions, med)}
    if unc:
        r.max_uncertainty = max(unc)


def _summary(r: DemoResult) -> None:
    print("\nsummary")
    print(f"  active policy         {r.active}")
    if r.shadow:
        share = r.shadow_agreeing / r.shadow_cycles if r.shadow_cycles else float("nan")
        apart = ", ".join(f"{a} {v:.1f}" for a, v in r.shadow_divergence_p50.items())
        print(f"  shadow policy         {r.shadow}: within the shadow tolerance of the active one in "
              f"{r.shadow_agreeing} of {r.shadow_cycles} cycles ({share:.0%}); median |shadow - active|: {apart}")
    if r.max_uncertainty == r.max_uncertainty:
        print(f"  active's uncertainty  at most {r.max_uncertainty:.2f} (1 = its training data's 99.9th percentile)")
    print(f"  fallback hand-overs   {len(r.fallbacks)}" + "".join(f"\n    - {why}" for why in r.fallbacks))
    if r.fallbacks:
        print(f"  control taken back    {'yes: the policy took control back once the plant was in its support' if r.handed_back else 'no, not within the run'}")
    print(f"  cycles run            {r.cycles}")
    print(f"  deadline misses       {r.deadline_misses}")
    print(f"  longest cycle         {r.max_cycle_ms:.2f} ms")
    print(f"  e-stop trips          {r.trips}")
    print(f"  audit records         {r.audit_records}")
    print(f"  audit verify          {r.audit_message}")
    print(f"  PLC safe after stop   {'yes' if r.plc_safe_after_stop else 'NO'}")
    if os.environ.get("EDGEWARDEN_DEMO_JSON"):
        print(json.dumps(r.__dict__))
