"""Run one scenario: twin (or external PLC), the real daemon as a subprocess, the timeline.

Order: twin (in this process, with fault injection) → recorder (every PLC tag, sampled
from the twin's process image each scan; for an external PLC read over OPC UA) → the
derived gateway config → ``edgewarden run --config`` as a subprocess, as systemd runs it
→ wait for READY, ``start``, wait for AUTO: that instant is t = 0 of the timeline → the
events, each at its time → the end of the timeline → SIGTERM to the daemon → a short tail
of recording → stop. Everything is stopped in reverse order in ``finally``, whatever
failed. The evidence (recording, audit records, events, status samples) is returned in a
:class:`RunData` for the invariants and the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgewarden.gateway.errors import GatewayError, TransportError
from edgewarden.gateway.ops.control import send_command
from edgewarden.hil.gwconfig import GatewayPlan, prepare
from edgewarden.hil.scenario import Event, Scenario

ACTOR = "hil-bench"
READY_TIMEOUT_S = 30.0
TAIL_S = 0.5  # recording kept after the daemon stopped


class PreflightRefused(GatewayError):
    """An external PLC is not in a safe state: the bench will not start the gateway on it."""

    exit_code = 69


@dataclass
class EventLog:
    event: Event
    t: float            # monotonic, when the bench acted
    t_done: float       # monotonic, when the action returned
    ok: bool
    reply: Any = None


@dataclass
class RunData:
    scenario: Scenario
    run_dir: Path
    plan: GatewayPlan | None = None
    t0: float = 0.0                                # monotonic time of timeline t = 0
    times: np.ndarray = field(default_factory=lambda: np.zeros(0))
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    events: list[EventLog] = field(default_factory=list)
    statuses: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)
    gateway_exit: int | None = None
    killed_at: float | None = None
    error: str | None = None                       # the run itself failed (not an invariant)
    wall_s: float = 0.0


class Recorder:
    """Samples every tag at the PLC side into columns; ``stop`` returns arrays."""

    def __init__(self, sample: Callable[[], Any], period_s: float) -> None:
        self._sample = sample
        self.period = period_s
        self.t: list[float] = []
        self.rows: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="hil-recorder")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while not self._stopping:
            row = self._sample()
            if asyncio.iscoroutine(row):
                with contextlib.suppress(Exception):
                    row = await row
                if asyncio.iscoroutine(row) or row is None:
                    row = {}
            self.t.append(time.monotonic())
            self.rows.append(row)
            deadline = max(deadline + self.period, loop.time())
            await asyncio.sleep(deadline - loop.time())

    async def stop(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=3.0)
        close = getattr(self._sample, "close", None)
        if close is not None:
            await close()
        names = sorted({k for r in self.rows for k in r})
        cols = {n: np.array([_num(r.get(n)) for r in self.rows]) for n in names}
        return np.array(self.t), cols


def _num(v: Any) -> float:
    if v is None:
        return float("nan")
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


class _Console:
    def __init__(self, name: str, quiet: bool) -> None:
        self.name, self.quiet = name, quiet
        self.t0 = time.monotonic()

    def say(self, text: str) -> None:
        if not self.quiet:
            print(f"  [{self.name} {time.monotonic() - self.t0:6.1f} s] {text}", flush=True)


async def run_scenario(sc: Scenario, run_dir: Path, *, quiet: bool = False) -> RunData:
    run_dir.mkdir(parents=True, exist_ok=True)
    data = RunData(sc, run_dir)
    con = _Console(sc.name, quiet)
    t_start = time.monotonic()
    twin = None
    recorder: Recorder | None = None
    proc: subprocess.Popen[bytes] | None = None
    poller: asyncio.Task[None] | None = None
    stop_polling = asyncio.Event()
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    try:
        if sc.twin:
            from edgewarden.simulators.twin import Twin

            opts = dict(sc.twin_options)
            twin = Twin(sc.plant, opcua=("127.0.0.1", 0), modbus=("127.0.0.1", 0), faults=True,
                        scan_ms=float(opts.get("scan_ms", 10.0)),
                        watchdog_ms=float(opts.get("watchdog_ms", 500.0)),
                        seed=int(opts.get("seed", 0)), time_scale=float(opts.get("time_scale", 1.0)))
            await twin.start()
            url = twin.opcua_url
            con.say(f"twin {sc.plant} up at {url} (time scale {twin.plc.time_scale:g})")
            plan = prepare(sc, run_dir, url)
            image = twin.image
            recorder = Recorder(image.snapshot, twin.scan_s)
        else:
            url = sc.external["opcua"]
            plan = prepare(sc, run_dir, url)  # the scenario's address is the one under test
            await preflight(url, plan)
            con.say(f"preflight passed: {url} is in its safe state")
            recorder = Recorder(_opcua_sampler(url, plan), 0.05)
        data.plan = plan
        recorder.start()
        with (run_dir / "gateway.log").open("wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "edgewarden.gateway.cli", "run", "--config",
                                     str(plan.config_path)], stdout=log, stderr=subprocess.STDOUT,
                                    cwd=run_dir)
        con.say(f"gateway started (pid {proc.pid}, log {run_dir / 'gateway.log'})")
        poller = asyncio.create_task(_poll_status(plan.socket, data, con, proc, stop_polling))
        data.t0 = await _bring_up(sc, plan, proc, con)
        await _timeline(sc, plan, data, twin, proc, con)
        await _sleep_until(data.t0 + sc.duration_s)
        if proc.poll() is None:
            with contextlib.suppress(GatewayError, OSError):
                data.statuses.append((time.monotonic(), await send_command(plan.socket, {"cmd": "status"})))
    except GatewayError as exc:
        data.error = str(exc)
        con.say(f"run failed: {exc}")
    finally:
        if poller is not None:
            # a flag as well as cancel: Python 3.11's wait_for can swallow a cancellation
            stop_polling.set()
            poller.cancel()
            await asyncio.wait([poller], timeout=3.0)
        if proc is not None:
            data.gateway_exit = await _stop_process(proc)
            con.say(f"gateway stopped (exit {data.gateway_exit})")
        if recorder is not None:
            await asyncio.sleep(TAIL_S)
            data.times, data.columns = await recorder.stop()
        if twin is not None:
            await twin.stop()
        if data.plan is not None:
            data.audit = _read_audit(data.plan.audit_dir)
        data.wall_s = time.monotonic() - t_start
    return data


async def _stop_process(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        for _ in range(150):
            if proc.poll() is not None:
                break
            await asyncio.sleep(0.1)
        else:
            proc.kill()
    while proc.poll() is None:
        await asyncio.sleep(0.05)
    return int(proc.returncode)


def _read_audit(directory: Path) -> list[dict[str, Any]]:
    from edgewarden.gateway.audit.verify import iter_records

    out: list[dict[str, Any]] = []
    with contextlib.suppress(GatewayError, OSError):
        for rec in iter_records(directory):
            out.append(rec.payload)
    return out


async def _sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def _status(sock: Path) -> dict[str, Any]:
    with contextlib.suppress(GatewayError, OSError):
        reply = await send_command(sock, {"cmd": "status"}, timeout_s=2.0)
        if reply.get("ok"):
            return reply
    return {}


async def _poll_status(sock: Path, data: RunData, con: _Console, proc: subprocess.Popen[bytes],
                       stop: asyncio.Event) -> None:
    last_print = 0.0
    while proc.poll() is None and not stop.is_set():
        st = await _status(sock)
        now = time.monotonic()
        if st:
            data.statuses.append((now, st))
            if now - last_print >= 2.0:
                s = st.get("stats", {})
                # the timeline's t = 0 is AUTO: before it, say so instead of a time
                when = f"t={now - data.t0:6.1f} s" if data.t0 else "before AUTO"
                con.say(f"{when} mode={st.get('mode'):<9} cycles={s.get('cycles')} "
                        f"misses={s.get('deadline_misses')} trips={st.get('trips')}")
                last_print = now
        await asyncio.sleep(0.2)


async def _bring_up(sc: Scenario, plan: GatewayPlan, proc: subprocess.Popen[bytes], con: _Console) -> float:
    deadline = time.monotonic() + READY_TIMEOUT_S
    mode = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise GatewayError(f"the gateway exited with code {proc.returncode} before READY; "
                               f"see {plan.config_path.parent / 'gateway.log'}")
        mode = (await _status(plan.socket)).get("mode")
        if mode == "READY":
            break
        await asyncio.sleep(0.05)
    else:
        raise GatewayError(f"the gateway did not reach READY within {READY_TIMEOUT_S:.0f} s "
                           f"(last mode {mode}); see {plan.config_path.parent / 'gateway.log'}")
    if not sc.start:
        con.say("gateway READY: timeline starts (no start)")
        return time.monotonic()
    reply = await send_command(plan.socket, {"cmd": "start", "actor": ACTOR})
    if not reply.get("ok"):
        raise GatewayError(f"the gateway refused start: {reply.get('error')}")
    while time.monotonic() < deadline:
        if (await _status(plan.socket)).get("mode") == "AUTO":
            con.say("gateway in AUTO: timeline starts")
            return time.monotonic()
        await asyncio.sleep(0.02)
    raise GatewayError("the gateway did not reach AUTO after start")


async def _timeline(sc: Scenario, plan: GatewayPlan, data: RunData, twin: Any,
                    proc: subprocess.Popen[bytes], con: _Console) -> None:
    for ev in sc.events:
        await _sleep_until(data.t0 + ev.at)
        t = time.monotonic()
        try:
            reply = await _act(ev, plan, twin, proc, data, sc)
            ok = not (isinstance(reply, dict) and reply.get("ok") is False)
        except (GatewayError, OSError, ValueError, KeyError, PermissionError) as exc:
            reply, ok = {"error": str(exc)}, False
        data.events.append(EventLog(ev, t, time.monotonic(), ok, reply))
        con.say(f"t={t - data.t0:6.2f} s {ev.label()}: {'ok' if ok else 'FAILED'}"
                + ("" if ok else f" ({reply})"))


def _plc_write(twin: Any, tag: str, value: Any) -> None:
    twin.image.write(tag, value)


async def _act(ev: Event, plan: GatewayPlan, twin: Any, proc: subprocess.Popen[bytes],
               data: RunData, sc: Scenario) -> Any:
    p, k = ev.params, ev.kind
    if k in ("estop", "reset", "start", "manual", "auto", "model_swap"):
        req: dict[str, Any] = {"cmd": k, "actor": ACTOR}
        if k in ("estop", "reset"):
            req["reason"] = p.get("reason", f"HIL scenario {sc.name}")
        if k == "manual" and "setpoints" in p:
            req["setpoints"] = p["setpoints"]
        if k == "model_swap":  # validated, warmed up, swapped atomically by the gateway
            req.update(cmd="model", action="load", path=p["model"])
        return await send_command(plan.socket, req)
    if k == "kill_gateway":
        sig = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM}[str(p["signal"]).upper()]
        os.kill(proc.pid, sig)
        data.killed_at = time.monotonic()
        return {"ok": True, "pid": proc.pid}
    if k == "setpoint":
        if twin is not None:
            _plc_write(twin, str(p["tag"]), p["value"])
        else:
            await _opcua_write(sc.external["opcua"], plan.nodes[str(p["tag"])], float(p["value"]))
        return {"ok": True}
    if twin is None:
        raise ValueError(f"{k} needs a twin")
    if k == "disturbance":
        twin.plant.set_disturbance(str(p["name"]), float(p["value"]))
    elif k == "fault":
        f = await twin.faults.inject(str(p["fault"]), str(p.get("target", "")), **dict(p.get("params", {})))
        return {"ok": True, "fault": f.describe()}
    elif k == "clear_faults":
        return {"ok": True, "cleared": await twin.faults.clear()}
    elif k == "plc_estop":
        _plc_write(twin, "estop_cmd", True)
    elif k == "plc_estop_release":
        _plc_write(twin, "estop_cmd", False)
    elif k == "plc_reset":
        _plc_write(twin, "reset_cmd", True)
    elif k == "hand":
        _plc_write(twin, "auto", False)
    elif k == "hand_back":
        _plc_write(twin, "auto", True)
    return {"ok": True}


# ---- external PLCs ------------------------------------------------------------------------
async def _opcua_write(url: str, node: str, value: float) -> None:
    from asyncua import Client, ua

    async with Client(url=url, timeout=2.0) as client:
        await client.get_node(node).write_value(ua.DataValue(ua.Variant(value, ua.VariantType.Double)))


def _opcua_sampler(url: str, plan: GatewayPlan) -> Callable[[], Any]:
    """Reads every mapped node each call over one client (reconnecting when it drops)."""
    from asyncua import Client

    state: dict[str, Any] = {"client": None}
    names = list(plan.nodes)

    async def sample() -> dict[str, Any]:
        try:
            if state["client"] is None:
                c = Client(url=url, timeout=2.0)
                await c.connect()
                state["client"] = c
                state["nodes"] = [c.get_node(plan.nodes[n]) for n in names]
            values = await state["client"].read_values(state["nodes"])
            return dict(zip(names, values))
        except Exception:  # noqa: BLE001 - a failed read is a gap in the recording
            c, state["client"] = state["client"], None
            if c is not None:
                with contextlib.suppress(Exception):
                    await c.disconnect()
            return {}

    async def close() -> None:
        c, state["client"] = state["client"], None
        if c is not None:
            with contextlib.suppress(Exception):
                await c.disconnect()

    sample.close = close  # type: ignore[attr-defined]
    return sample


async def preflight(url: str, plan: GatewayPlan, heartbeat_window_s: float = 1.5) -> None:
    """Refuse an external PLC that is not in its safe state or is being driven already.

    Safe state: every action setpoint register the gateway would write holds its
    configured safe value, and the heartbeat register is not moving (no other gateway).
    """
    from asyncua import Client

    problems: list[str] = []
    try:
        async with Client(url=url, timeout=3.0) as client:
            regs = [a.plc_tag for a in plan.actions]
            missing = [r for r in regs + [plan.heartbeat_tag] if r not in plan.nodes]
            if missing:
                raise PreflightRefused(f"preflight: no OPC UA node for {missing} in {plan.config_path}")
            nodes = [client.get_node(plan.nodes[r]) for r in regs]
            hb = client.get_node(plan.nodes[plan.heartbeat_tag])
            values = await client.read_values(nodes)
            hb0 = await hb.read_value()
            await asyncio.sleep(heartbeat_window_s)
            hb1 = await hb.read_value()
    except PreflightRefused:
        raise
    except Exception as exc:  # noqa: BLE001 - any client failure means: do not start
        raise TransportError(f"preflight: cannot read the PLC at {url}: {exc}") from None
    for a, v in zip(plan.actions, values):
        if not isinstance(v, (int, float)) or abs(float(v) - a.safe) > 1e-9:
            problems.append(f"{a.plc_tag} = {v!r}, its safe value is {a.safe:g}")
    if hb0 != hb1:
        problems.append(f"{plan.heartbeat_tag} is changing ({hb0} -> {hb1}): another gateway "
                        f"is driving this PLC")
    if problems:
        raise PreflightRefused(f"preflight refused {url}, the PLC is not in its safe state: "
                               + "; ".join(problems)
                               + ". Put it in its safe state (or stop the other gateway) first.")
