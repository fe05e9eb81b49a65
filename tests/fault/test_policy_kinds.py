"""Control without a learned model (``[policy] kind``), on the real CSTR twin: ``pid`` and
``hold`` run through the same checks, shield, heartbeat and audit as a model; ``monitor``
reads, checks and audits and writes nothing at all."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from tests.fault.harness import bench, wait_for
from tests.helpers import CSTR_COOLANT_PID

NO_MODEL = {r'^path = "[^"]*"': "kind = \"{kind}\""}
COOLANT_PID = CSTR_COOLANT_PID + """
[policy.pid.feed_flow_sp]   # a constant feed: kp = 0, the bias alone
pv = "T"
setpoint = 0.0
kp = 0.0
bias = 100.0
"""


def kind(name: str) -> dict[str, str]:
    return {k: v.format(kind=name) for k, v in NO_MODEL.items()}


def cycles(records: list[dict]) -> list[dict]:
    return [r for r in records if r["kind"] == "cycle"]


@pytest.mark.anyio
async def test_pid_reaches_auto_and_holds_the_temperature(tmp_path: Path) -> None:
    async with bench(tmp_path, replace=kind("pid"), extra=COOLANT_PID) as b:
        await wait_for(lambda: b.mode == "READY", "READY")
        applied = b.twin_applied()
        assert (await b.cmd("start"))["ok"]
        await wait_for(lambda: b.twin_setpoints()[1] == 100.0, "the constant feed ramped in", timeout=10)
        # the cold feed pulls T below its set point: a reverse-acting loop answers with less
        # coolant. Waited for, not slept for: the plant's pace is its own, not the machine's.
        await wait_for(lambda: b.twin_setpoints()[0] < applied[0] - 25.0, "the PID cutting the coolant",
                       timeout=30)
        records = b.audit_records()
        load = next(r for r in records if r["kind"] == "model_load")
        assert load["algorithm"] == "pid" and load["path"] is None
        auto = [r for r in cycles(records) if r["mode"] == "AUTO"]
        assert len(auto) > 40 and all(r["model"] == load["sha256"][:16] for r in auto)
        first = auto[0]["written"]
        assert abs(first[0] - applied[0]) <= 100.0 * 0.05 + 1e-9  # bumpless: from what the plant got
        assert all(r["ack"] == ["ok", "ok", "ok"] for r in auto[-20:])  # written and acknowledged
        # T, T_sp are observations 0 and 3: the temperature the loop saw stayed near its set
        # point through the disturbance, and it was below it (so less coolant was right)
        errors = [r["obs"][0] - r["obs"][3] for r in auto]
        assert max(abs(e) for e in errors) < 4.0 and errors[-1] < 0.0, (min(errors), errors[-1])
        status = await b.status()
        assert status["policy"]["kind"] == "pid" and status["writes"] is True
        assert b.twin.opcua.client_writes > 2 * len(auto)  # the counter the monitor test reads sees writes


@pytest.mark.anyio
async def test_hold_keeps_what_the_plant_gets(tmp_path: Path) -> None:
    async with bench(tmp_path, replace=kind("hold")) as b:
        await wait_for(lambda: b.mode == "READY", "READY")
        b.twin.image.write("coolant_flow_sp", 150.0)  # the plant moves while the gateway waits in READY
        await wait_for(lambda: b.twin_applied()[0] == 150.0, "the PLC applying it")
        await asyncio.sleep(0.2)
        applied = b.twin_applied()
        assert (await b.cmd("start"))["ok"]
        await asyncio.sleep(1.0)
        auto = [r for r in cycles(b.audit_records()) if r["mode"] == "AUTO"]
        assert len(auto) > 10
        assert all(np.allclose(r["written"], applied) and np.allclose(r["proposed"], applied) for r in auto)
        assert b.twin_setpoints() == applied
        assert b.mode == "AUTO"


@pytest.mark.anyio
async def test_monitor_judges_comms_by_reads_alone_and_never_trips_on_a_healthy_plant(tmp_path: Path) -> None:
    """It writes nothing, so no write is ever acknowledged: silence is judged by its reads
    (comms_timeout_ms is 1 s here; it used to trip comms_loss about a second in)."""
    async with bench(tmp_path, replace=kind("monitor")) as b:
        await wait_for(lambda: b.mode == "READY", "READY (the checks run)")
        assert b.gateway.loop is not None
        n = b.gateway.loop.stats.cycles
        await wait_for(lambda: b.gateway.loop.stats.cycles >= n + 80, "80 cycles, four comms timeouts at 20 Hz",
                       timeout=30)
        assert b.mode == "READY" and b.gateway.loop.estop.count == 0
        assert (await b.cmd("estop", reason="monitor test"))["ok"]
        await wait_for(lambda: b.mode == "ESTOP", "ESTOP")
        reply = await b.cmd("reset", reason="monitor test")
        assert reply["ok"], reply  # nothing written, nothing to vouch for: the reset is judged by the reads
        m = b.gateway.loop.stats.cycles
        await wait_for(lambda: b.gateway.loop.stats.cycles >= m + 40, "40 more cycles", timeout=30)
        assert b.mode == "READY" and b.gateway.loop.estop.count == 1


@pytest.mark.anyio
async def test_monitor_writes_nothing_not_even_the_heartbeat(tmp_path: Path) -> None:
    async with bench(tmp_path, replace=kind("monitor")) as b:
        before = b.twin_setpoints(), float(b.twin.image["heartbeat"])
        await wait_for(lambda: b.mode == "READY", "READY (the checks run)")
        reply = await b.cmd("start")
        assert not reply["ok"] and "writes nothing" in reply["error"], reply
        reply = await b.cmd("manual", setpoints={"coolant_flow_sp": 150.0, "feed_flow_sp": 60.0})
        assert not reply["ok"] and "writes nothing" in reply["error"], reply
        assert (await b.cmd("estop", reason="monitor test"))["ok"]  # latched and audited, nothing written
        await asyncio.sleep(0.5)
        assert b.mode == "ESTOP"
        status = await b.status()
        assert status["writes"] is False and status["policy"]["kind"] == "monitor"
        records = b.audit_records()
        assert len(cycles(records)) > 10
        assert all(r["written"] is None and r["ack"] is None and r["hb"] is None for r in cycles(records))
        trip = next(r for r in records if r["kind"] == "trip")
        assert trip["safe_write"] is None
        assert b.twin.opcua.client_writes == 0  # the server saw no write at all
        assert (b.twin_setpoints(), float(b.twin.image["heartbeat"])) == before
