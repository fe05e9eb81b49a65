"""Network faults between the real daemon (a subprocess) and the CSTR twin, through the
tests' own fault proxy (tests/fault/proxy.py): one case = start, AUTO, fault, hold,
clear, recover, and what the audit log says about it.

Times come from the audit log's ``t_mono`` (CLOCK_MONOTONIC, the same clock in every
process on the machine) against the moment this process injected the fault. Used by
tests/fault/test_net_faults.py and by ``python -m tests.fault.netfaults`` (the table in
docs/safety.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgewarden.data import EXAMPLES, MODELS
from edgewarden.gateway.audit.verify import iter_records, verify
from edgewarden.gateway.ops.control import send_command
from edgewarden.simulators.twin import Twin
from tests.fault.proxy import FaultProxy
from tests.helpers import EXAMPLE, control_status, free_port, wait_for, write_config

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = MODELS / "cstr_baseline.onnx"
MODBUS_EXAMPLE = EXAMPLES / "cstr_modbus.toml"
SAFE = (200.0, 0.0)
LINKS = ("opcua-poll", "opcua-subscribe", "modbus")
# fault name -> (proxy mode, delay s); "restart" stops the server itself
FAULTS: dict[str, tuple[str, float]] = {
    "drop": ("pass", 0.0), "delay-200ms": ("delay", 0.2), "delay-2s": ("delay", 2.0),
    "blackhole": ("blackhole", 0.0), "silent-accept": ("silent", 0.0), "restart": ("pass", 0.0),
}
# faults after which nothing the gateway sends can be acknowledged until they clear
NOTHING_ACKED = ("delay-200ms", "delay-2s", "blackhole", "silent-accept", "restart")


@dataclass
class CaseResult:
    link: str
    fault: str
    budget_ms: float  # comms_timeout_ms + one cycle
    period_ms: float
    estop_ms: float | None = None  # fault start -> mode ESTOP (None: no trip)
    safe_write_ms: float | None = None  # fault start -> the trip record (after the safe write's attempt)
    trip_code: str = ""
    safe_ack: list[str] = field(default_factory=list)
    recovery_ms: float | None = None  # fault cleared -> fresh data again (gateway side)
    status_answers: int = 0
    status_asked: int = 0
    false_acks: int = 0  # records in the fault that claim an acknowledged write
    resumed_without_reset: bool = False
    audit_ok: bool = False
    last_acked: list[float] | None = None  # the last acknowledged action write
    twin_setpoints: tuple[float, float] = (0.0, 0.0)

    def row(self) -> str:
        def ms(v: float | None) -> str:
            return "no trip" if v is None else f"{v:.0f}"
        return (f"| {self.link} | {self.fault} | {ms(self.estop_ms)} | {ms(self.safe_write_ms)} | {self.budget_ms:.0f} "
                f"| {self.trip_code or '-'} | {'-' if self.recovery_ms is None else f'{self.recovery_ms:.0f}'} "
                f"| {self.status_answers}/{self.status_asked} | {self.false_acks} |")


HEADER = ("| link | fault | to ESTOP (ms) | safe write done (ms) | budget (ms) | trip | recovery (ms) "
          "| status answered | false acks |\n|---|---|---|---|---|---|---|---|---|")


def _config(tmp: Path, link: str, proxy_port: int) -> Path:
    if link == "modbus":
        return write_config(tmp, policy=SHIPPED, example=MODBUS_EXAMPLE, modbus_port=proxy_port)
    extra = {r"^timeout_s = 2.0": 'timeout_s = 2.0\nmode = "subscribe"'} if link == "opcua-subscribe" else {}
    return write_config(tmp, policy=SHIPPED, url=f"opc.tcp://127.0.0.1:{proxy_port}", replace=extra,
                        example=EXAMPLE)


async def _server(twin: Twin, link: str, up: bool) -> None:
    server = twin.modbus if link == "modbus" else twin.opcua
    assert server is not None
    await (server.start() if up else server.stop())


async def run_case(tmp: Path, link: str, fault: str, hold_s: float = 2.0) -> CaseResult:
    """One cell of the matrix; everything it started is stopped when it returns."""
    # fixed ports: a restarted server must come back where the proxy forwards
    twin = Twin("cstr", watchdog_ms=500, opcua=("127.0.0.1", free_port()),
                modbus=("127.0.0.1", free_port()) if link == "modbus" else None)
    await twin.start()
    upstream_port = twin.modbus.port if link == "modbus" and twin.modbus else twin.opcua.port
    proxy = FaultProxy(("127.0.0.1", int(upstream_port or 0)))
    await proxy.start()
    config = _config(tmp, link, proxy.port)
    sock = tmp / "control.sock"
    log = (tmp / "daemon.log").open("wb")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "edgewarden.gateway.cli", "run", "--config", str(config),
                                                stdout=log, stderr=log, env={**os.environ, "NOTIFY_SOCKET": ""})
    from edgewarden.gateway.config import load_config

    gw = load_config(config).settings.gateway
    period_ms = 1000.0 / gw.cycle_hz
    result = CaseResult(link, fault, gw.comms_timeout_ms + period_ms, period_ms)
    in_control, t_end = False, math.inf
    try:
        async def mode() -> str:
            return str((await control_status(sock)).get("mode", ""))

        async def is_mode(*names: str) -> bool:
            return await mode() in names

        await wait_for(lambda: is_mode("READY"), "READY", timeout=30)
        assert (await send_command(sock, {"cmd": "start", "actor": "test"}))["ok"]
        await wait_for(lambda: twin.image["feed_flow_sp"] == 100.0, "the policy's actions at the twin", timeout=10)
        await asyncio.sleep(0.5)

        proxy_mode, delay = FAULTS[fault]
        t_fault = time.monotonic()
        if fault == "drop":
            proxy.drop()
        elif fault == "restart":
            await _server(twin, link, up=False)
        else:
            proxy.set(proxy_mode, delay)
        end = t_fault + hold_s
        while time.monotonic() < end:  # the operator channel keeps answering through the fault
            result.status_asked += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    if await control_status(sock):
                        result.status_answers += 1
            await asyncio.sleep(0.1)
        t_clear = time.monotonic()
        if fault == "restart":
            await _server(twin, link, up=True)
        proxy.set("pass")

        async def fresh() -> bool:
            st = await control_status(sock)
            return bool(st) and not str(st.get("verdict", "")).startswith(("no_data", "stale")) \
                and all(h.get("connected") for h in st.get("links", {}).values())

        with contextlib.suppress(AssertionError):
            await wait_for(fresh, "fresh data after the fault", timeout=20, interval=0.02)
            result.recovery_ms = (time.monotonic() - t_clear) * 1000.0
        await asyncio.sleep(0.5)
        in_control = await is_mode("AUTO", "FALLBACK")  # after a trip, only a reset may lead back
        t_end = time.monotonic()
        if in_control:  # rode through the fault: stop the policy's writes so the log and the twin compare
            assert (await send_command(sock, {"cmd": "estop", "actor": "test", "reason": "end of the test"}))["ok"]
        if await is_mode("ESTOP"):
            async def reset() -> bool:
                reply = await send_command(sock, {"cmd": "reset", "actor": "test", "reason": "fault test"})
                return bool(reply.get("ok"))
            await wait_for(reset, "an accepted reset", timeout=10)
        await asyncio.sleep(0.3)
        result.twin_setpoints = (float(twin.image["coolant_flow_sp"]), float(twin.image["feed_flow_sp"]))
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        log.close()
        await proxy.close()
        await twin.stop()

    audit = tmp / "audit"
    result.audit_ok = verify(audit).ok
    records = [r.payload for r in iter_records(audit)]
    to_estop = next((r for r in records if r.get("kind") == "mode" and r.get("to") == "ESTOP"
                     and t_fault <= r["t_mono"] < t_end), None)
    trip = next((r for r in records if r.get("kind") == "trip" and t_fault <= r["t_mono"] < t_end), None)
    if to_estop is not None:
        result.estop_ms = (to_estop["t_mono"] - t_fault) * 1000.0
    # a transient fault the link rode through (no trip) leaves the gateway in control, rightly
    result.resumed_without_reset = in_control and to_estop is not None
    if trip is not None:
        result.safe_write_ms = (trip["t_mono"] - t_fault) * 1000.0
        result.trip_code = trip["code"]
        result.safe_ack = list((trip.get("safe_write") or {}).get("ack") or [])
    cycles = [r for r in records if r.get("kind") == "cycle"]
    if fault in NOTHING_ACKED:
        window = [r for r in cycles if t_fault + period_ms / 1000.0 <= r["t_mono"] <= t_clear]
        result.false_acks = sum(1 for r in window if isinstance(r.get("ack"), list) and "ok" in r["ack"])
    # what the log says was written and acknowledged, in log order: cycles, and the e-stop's
    # safe write (in its trip record)
    writes = [r.get("safe_write") or {} if r.get("kind") == "trip" else r for r in records
              if r.get("kind") in ("cycle", "trip")]
    acked = [w for w in writes if w.get("written") is not None and isinstance(w.get("ack"), list)
             and all(a == "ok" for a in w["ack"])]
    result.last_acked = acked[-1]["written"] if acked else None
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the matrix and print the markdown table of docs/safety.md."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--links", default=",".join(LINKS))
    ap.add_argument("--faults", default=",".join(FAULTS))
    args = ap.parse_args(argv)
    rows = []
    for link in args.links.split(","):
        for fault in args.faults.split(","):
            with tempfile.TemporaryDirectory() as d:
                res = asyncio.run(run_case(Path(d), link, fault))
            rows.append(res.row())
            print(res.row(), file=sys.stderr, flush=True)
    print(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "on", os.uname().nodename, f"({os.cpu_count()} CPUs)")
    print(HEADER)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
