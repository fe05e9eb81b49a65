"""Human override against the real twin: PLC hand/auto and the operator command.

In MANUAL the gateway writes no policy action (operator setpoints, when given, pass the
shield); hand-back is bumpless: no written step larger than the rate limit.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.fault.harness import Bench, bench, wait_for

RATE = {"coolant_flow_sp": 100.0, "feed_flow_sp": 50.0}  # per second, examples/cstr.toml
PERIOD = 0.05  # 20 Hz in the harness


def cycles(b: Bench) -> list[dict[str, Any]]:
    return [r for r in b.audit_records() if r["kind"] == "cycle"]


def assert_rate_limited(records: list[dict[str, Any]]) -> None:
    written = [r["written"] for r in records if r["written"] is not None]
    assert len(written) > 5
    for prev, cur in zip(written, written[1:]):
        assert abs(cur[0] - prev[0]) <= RATE["coolant_flow_sp"] * PERIOD + 1e-9, (prev, cur)
        assert abs(cur[1] - prev[1]) <= RATE["feed_flow_sp"] * PERIOD + 1e-9, (prev, cur)


@pytest.mark.anyio
async def test_plc_hand_auto_selector(tmp_path: Path) -> None:
    async with bench(tmp_path) as b:
        await b.start_auto()
        b.twin.image.write("auto", False)  # the operator turns the PLC to hand
        await wait_for(lambda: b.mode == "MANUAL", "MANUAL from the PLC selector")
        held = b.twin_setpoints()
        n_before = len(cycles(b))
        await asyncio.sleep(0.6)
        manual = [r for r in cycles(b)[n_before:] if r["mode"] == "MANUAL"]
        assert len(manual) >= 8
        assert all(r["written"] is None and r["proposed"] is None for r in manual)  # no policy write
        assert b.twin_setpoints() == held
        # the PLC applies its manual outputs (safe defaults); the gateway tracks them
        assert b.twin_applied() == (200.0, 0.0)
        assert list(b.gateway.loop.action) == [200.0, 0.0]
        status = await b.status()
        assert status["manual_by"] == ["plc"]

        n_back = len(cycles(b))
        b.twin.image.write("auto", True)  # back to auto: bumpless ramp from what was applied
        await wait_for(lambda: b.mode == "AUTO", "AUTO after the selector")
        # the PLC still holds the last AUTO setpoint (100) until the gateway's first write lands
        await wait_for(lambda: b.twin_setpoints()[1] < 100.0, "the first hand-back write")
        await wait_for(lambda: b.twin_setpoints()[1] == 100.0, "the ramp to finish", timeout=10)
        after = [r for r in cycles(b)[n_back:] if r["mode"] == "AUTO"]
        assert after[0]["written"][1] <= RATE["feed_flow_sp"] * PERIOD + 1e-9  # starts from 0
        assert_rate_limited(after)
        modes = [(r["from"], r["to"], r["actor"]) for r in b.audit_records() if r["kind"] == "mode"]
        assert ("AUTO", "MANUAL", "plc") in modes and ("MANUAL", "AUTO", "plc") in modes


@pytest.mark.anyio
async def test_operator_manual_with_setpoints_and_hand_back(tmp_path: Path) -> None:
    async with bench(tmp_path) as b:
        await b.start_auto()
        n0 = len(cycles(b))
        reply = await b.cmd("manual", setpoints={"coolant_flow_sp": 150.0, "feed_flow_sp": 60.0})
        assert reply["ok"] and reply["mode"] == "MANUAL", reply
        await wait_for(lambda: b.twin_setpoints() == (150.0, 60.0), "operator setpoints at the twin")
        manual = [r for r in cycles(b)[n0:] if r["mode"] == "MANUAL"]
        assert all(r["proposed"] is None for r in manual)  # the policy writes nothing
        assert_rate_limited(manual)  # operator setpoints pass the shield too
        assert not (await b.cmd("manual", setpoints={"nope": 1.0}))["ok"]

        n1 = len(cycles(b))
        reply = await b.cmd("auto")
        assert reply["ok"] and reply["mode"] == "AUTO", reply
        await wait_for(lambda: b.twin_setpoints()[1] == 100.0, "the hand-back ramp", timeout=10)
        assert_rate_limited([r for r in cycles(b)[n1:] if r["mode"] == "AUTO"])
        ops = [(r["cmd"], r["outcome"]) for r in b.audit_records() if r["kind"] == "operator"]
        assert ops[-4:] == [("start", "accepted"), ("manual", "accepted"), ("manual", "refused"), ("auto", "accepted")]


@pytest.mark.anyio
async def test_plc_dropping_remote_in_auto(tmp_path: Path) -> None:
    """The twin's PLC latches its watchdog (it drops REMOTE and applies its own safe values)
    while the gateway is in AUTO: the gateway shows it within one cycle of reading it, does
    not claim to control (MANUAL, held by the PLC, alarm), and hands back once the PLC's
    reset restores REMOTE."""
    async with bench(tmp_path) as b:
        await b.start_auto()
        b.twin.image.set("watchdog_tripped", True)  # the PLC latches its own dead-man
        await wait_for(lambda: not b.twin.image["remote"], "the PLC to drop REMOTE", timeout=2)
        dropped = asyncio.get_running_loop().time()
        await wait_for(lambda: b.mode == "MANUAL", "MANUAL", timeout=2)
        # one PLC scan for the twin's servers, one cycle to read it, one to act on it
        assert asyncio.get_running_loop().time() - dropped <= 2 * PERIOD + 0.05
        st = await b.status()
        assert st["plc_accepts"] is False and "plc_not_accepting" in st["alarms"]
        assert st["manual_by"] == ["plc_remote"]
        n = len([r for r in cycles(b) if r["written"] is not None])
        await asyncio.sleep(0.3)
        assert len([r for r in cycles(b) if r["written"] is not None]) == n  # nothing but heartbeats
        b.twin.image.write("reset_cmd", True)  # the PLC's reset: REMOTE again
        await wait_for(lambda: b.mode == "AUTO", "the hand-back to AUTO", timeout=3)
        assert (await b.status())["plc_accepts"] is True
        alarms = [(r["alarm"], r["raised"]) for r in b.audit_records() if r["kind"] == "alarm"]
        assert ("plc_not_accepting", True) in alarms and ("plc_not_accepting", False) in alarms
