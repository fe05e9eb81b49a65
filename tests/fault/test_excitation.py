"""``edgewarden excite`` on the real daemon and the CSTR twin: a PRBS on the PID's coolant
output goes through the shield and into the cycle records; it is refused outside AUTO
and beyond its limits; it stops by itself, on record, when the plant leaves plain AUTO."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from tests.fault.harness import bench, wait_for
from tests.fault.test_authority import FEED_HELD
from tests.helpers import CSTR_COOLANT_PID

PID = {r'^path = "[^"]*"': 'kind = "pid"'}


@pytest.mark.anyio
async def test_a_prbs_on_the_pid_output_is_bounded_recorded_and_stops_on_manual(tmp_path: Path) -> None:
    async with bench(tmp_path, replace=PID, extra=CSTR_COOLANT_PID + FEED_HELD) as b:
        early = await b.cmd("excite", action="start", amplitude={"coolant_flow_sp": 15.0}, hold_s=1.0)
        assert not early["ok"] and "excite start needs AUTO" in early["error"]
        await b.start_auto()
        await asyncio.sleep(2.0)  # the feed ramped up, the PID settled
        big = await b.cmd("excite", action="start", amplitude={"coolant_flow_sp": 50.0}, hold_s=1.0)
        assert not big["ok"] and "at most 20" in big["error"]
        reply = await b.cmd("excite", action="start", amplitude={"coolant_flow_sp": 15.0}, hold_s=1.0,
                            duration_s=60.0, seed=3, reason="history for learning")
        assert reply["ok"] and reply["excitation"]["signal"] == "prbs", reply
        st = await wait_for(lambda: _excited(b), "the status to show the excitation")
        assert st["excitation"]["amplitude"] == {"coolant_flow_sp": 15.0}
        await asyncio.sleep(6.0)
        assert (await b.cmd("manual"))["ok"]
        await wait_for(lambda: not b.gateway.loop.excitation.active, "the excitation to stop")

    records = b.audit_records()
    events = [r for r in records if r["kind"] == "excitation"]
    assert [e["change"] for e in events] == ["start", "stop"]
    assert events[0]["seed"] == 3 and events[0]["actor"].endswith("test-operator")
    assert "left plain AUTO (MANUAL" in events[1]["reason"] and events[1]["actor"] == "gateway"
    cycles = [r for r in records if r["kind"] == "cycle" and "excite" in r]
    offsets = np.array([r["excite"] for r in cycles])
    assert len(cycles) > 50 and set(np.unique(offsets[:, 0])) == {-15.0, 15.0} and (offsets[:, 1] == 0).all()
    moved = np.array([r["written"][0] - r["proposed"][0] for r in cycles])
    assert np.abs(moved).max() <= 15.0 + 1e-6  # never beyond the amplitude (the shield may ramp it)
    assert (np.abs(moved) > 10.0).mean() > 0.5  # and mostly the full offset: the plant saw the moves
    ops = [r for r in records if r["kind"] == "operator" and r["cmd"] == "excite"]
    assert [r["outcome"] for r in ops] == ["refused", "refused", "accepted"]
    assert ops[-1]["amplitude"] == {"coolant_flow_sp": 15.0} and ops[-1]["reason"] == "history for learning"


async def _excited(b) -> dict:  # noqa: ANN001
    st = await b.status()
    return st if st.get("excitation") else {}
