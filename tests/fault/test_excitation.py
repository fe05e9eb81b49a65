"""``edgewarden excite`` on the real daemon and the CSTR twin: a PRBS on the PID's coolant
output goes through the shield and into the cycle records; it is refused outside AUTO
and beyond its limits; it stops by itself, on record, when the plant leaves plain AUTO."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from tests.fault.harness import bench, wait_for
from tests.helpers import CSTR_COOLANT_PID, FEED_HELD

PID = {r'^path = "[^"]*"': 'kind = "pid"'}


@pytest.mark.anyio
async def test_a_prbs_on_the_pid_output_is_bounded_recorded_and_stops_on_manual(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgewarden.gateway.cli import main

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
        capsys.readouterr()
        assert await asyncio.to_thread(main, ["excite", "status", "--socket", str(tmp_path / "control.sock")]) == 0
        assert '"signal": "prbs"' in capsys.readouterr().out
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
    assert len(cycles) > 50 and (offsets[:, 1] == 0).all()
    assert np.abs(offsets[:, 0]).max() <= 15.0 + 1e-9 and (np.abs(offsets[:, 0]) == 15.0).mean() > 0.5
    assert offsets[:, 0].min() == -15.0 and offsets[:, 0].max() == 15.0  # both levels, ramped between
    moved = np.array([r["written"][0] - r["proposed"][0] for r in cycles])
    assert np.abs(moved - offsets[:, 0]).max() < 1e-6  # the shield had nothing to cut on its account
    assert not [r for r in records if r["kind"] == "mode" and r["to"] == "FALLBACK"]
    ops = [r for r in records if r["kind"] == "operator" and r["cmd"] == "excite"]
    assert [(r["action"], r["outcome"]) for r in ops] == [("start", "refused"), ("start", "refused"),
                                                          ("start", "accepted"), ("status", "accepted")]
    assert ops[2]["amplitude"] == {"coolant_flow_sp": 15.0} and ops[2]["reason"] == "history for learning"


@pytest.mark.anyio
async def test_the_hold_controller_is_not_excited(tmp_path: Path) -> None:
    """hold proposes what was last written: offsets would add up, so it is refused (as on an
    action a PID controller has no loop for)."""
    async with bench(tmp_path, replace={r'^path = "[^"]*"': 'kind = "hold"'}) as b:
        await wait_for(lambda: b.gateway.loop is not None and b.mode == "READY", "READY")
        assert (await b.cmd("start"))["ok"]
        reply = await b.cmd("excite", action="start", amplitude={"coolant_flow_sp": 5.0})
        assert not reply["ok"] and "the hold controller holds coolant_flow_sp at what was last written" in reply["error"]


async def _excited(b) -> dict:  # noqa: ANN001
    st = await b.status()
    return st if st.get("excitation") else {}


@pytest.mark.anyio
async def test_a_step_test_on_the_pid_gives_tuning_that_holds_the_plant(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Open-loop steps on the coolant (the twin at 10× speed) → ``edgewarden tune`` → a
    FOPDT model of T against the coolant (lag-dominant: the exothermic reactor is still
    moving at the end of each step) and SIMC settings, which then follow a setpoint step."""
    from edgewarden.gateway.cli import main

    # the loop's integral 10× the shared one: the twin runs 10× faster than the PID's clock
    fast = CSTR_COOLANT_PID.replace("ki = -0.2", "ki = -2.0")
    assert fast != CSTR_COOLANT_PID
    async with bench(tmp_path, replace=PID, extra=fast + FEED_HELD, time_scale=10.0) as b:
        b.twin.image.set("T_sp", 355.0)  # an operating point with the coolant off its limit
        await b.start_auto()

        def near() -> bool:  # near the operating point, still drifting slowly (the fit takes up a trend)
            return abs(float(b.twin.image["T"]) - 355.0) < 3.0 and b.twin_setpoints()[0] < 180.0
        await wait_for(near, "the reactor near 355 K", timeout=30)
        reply = await b.cmd("excite", action="start", signal="steps", amplitude={"coolant_flow_sp": 20.0},
                            hold_s=5.0, duration_s=20.0, reason="step test")
        assert reply["ok"], reply
        await wait_for(lambda: not b.gateway.loop.excitation.active, "the step test to end", timeout=30)
    capsys.readouterr()
    assert main(["tune", str(tmp_path / "audit"), "--pv", "T", "--action", "coolant_flow_sp", "--setpoint", "T_sp",
                 "--json"]) == 0
    import json

    out = json.loads(capsys.readouterr().out)
    assert out["model"]["gain"] < 0 and out["model"]["fit"] > 0.8
    assert out["pi"]["kp"] < 0 and out["pi"]["ki"] < 0

    # the proposed settings, in place of the loop: a setpoint step 355 → 352 K is followed
    # and held, in AUTO throughout
    assert main(["tune", str(tmp_path / "audit"), "--pv", "T", "--action", "coolant_flow_sp", "--setpoint", "T_sp",
                 "--tau-c", "1.0"]) == 0
    table = capsys.readouterr().out.split("\n\n", 1)[1]
    assert table.startswith("[policy.pid.coolant_flow_sp]\npv = \"T\"\nsetpoint = \"T_sp\"\nkp = ")
    tuned = table + "bias = 100.0\n"
    (tmp_path / "tuned").mkdir()
    async with bench(tmp_path / "tuned", replace=PID, extra=tuned + FEED_HELD, time_scale=10.0) as b:
        b.twin.image.set("T_sp", 355.0)
        await b.start_auto()
        await wait_for(lambda: abs(float(b.twin.image["T"]) - 355.0) < 0.5, "T at 355 K under the tuned loop",
                       timeout=30)
        b.twin.image.set("T_sp", 352.0)
        trace = []
        for _ in range(30):  # 150 s of the reactor's time
            await asyncio.sleep(0.5)
            trace.append(float(b.twin.image["T"]))
        assert min(trace) > 351.0 and abs(trace[-1] - 352.0) < 0.25, trace  # (seen: 0.56 K under, 352.06 K)
        assert b.mode == "AUTO"
