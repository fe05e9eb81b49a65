"""Bounded authority on the real CSTR twin: the case that made it necessary.

A gateway running the PID (``kind = "pid"``) shadows a learned policy whose observations
include the valves' readbacks and which copies them: it agrees with the PID at steady
state, so it is promoted. After a manual excursion (coolant cut) and the hand-back, the
copy holds the low coolant while the reactor heats. With the full action range it drove
T far up; within the authority band around the PID's proposal (docs/safety.md) the PID's
rising coolant drags it along and the reactor stays well below that."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from tests.fault.harness import Bench, bench, wait_for
from tests.helpers import CSTR_COOLANT_PID, contract

OBSERVATIONS = ("T", "CA", "Tj", "T_sp", "coolant_flow", "feed_flow")
UNITS = ("K", "mol/L", "K", "K", "L/min", "L/min")
PID_WITH_READBACKS = {
    r'^path = "[^"]*"': 'kind = "pid"\npromote_after_s = 1.0',
    r"^observations = \[[^\]]*\]": "observations = " + str(list(OBSERVATIONS)).replace("'", '"'),
}
FEED_HELD = """
[policy.pid.feed_flow_sp]   # a constant feed: kp = 0, the bias alone
pv = "T"
setpoint = 0.0
kp = 0.0
bias = 100.0
"""


def copy_model(path: Path) -> Path:
    """action = the valves' readbacks: a policy that repeats what the plant gets."""
    from edgewarden.training.onnx_graph import build_linear_policy, write_model

    c = contract("bc").replaced(observation_tags=OBSERVATIONS, observation_units=UNITS)
    weight = np.zeros((2, len(OBSERVATIONS)))
    weight[0, 4] = weight[1, 5] = 1.0
    return write_model(path, build_linear_policy(c, weight, np.zeros(2)))


async def excursion(b: Bench, model: Path) -> tuple[float, float, list[dict]]:
    """Promote the copy, cut the coolant by hand for 1.5 s (15 s of the twin's time), hand back; (T at the hand-back,
    the highest T in the 8 s after it (80 s of the twin's time), the AUTO cycle records after it)."""
    await b.start_auto()
    await asyncio.sleep(1.0)  # the PID at steady state
    assert (await b.cmd("model", action="shadow", path=str(model)))["ok"]
    await asyncio.sleep(1.3)  # agrees at steady state: promote_after_s = 1
    reply = await b.cmd("model", action="promote")
    assert reply["ok"], reply
    await wait_for(lambda: b.gateway.loop.policy.algorithm == "bc", "the copy in control")
    assert (await b.cmd("manual", setpoints={"coolant_flow_sp": 20.0, "feed_flow_sp": 100.0}))["ok"]
    await asyncio.sleep(1.5)
    n0 = b.gateway.loop.stats.cycles
    t_back = float(b.twin.image["T"])
    assert (await b.cmd("auto"))["ok"]
    peak = t_back
    for _ in range(80):
        await asyncio.sleep(0.1)
        peak = max(peak, float(b.twin.image["T"]))
    cycles = [r for r in b.audit_records() if r["kind"] == "cycle" and r["n"] > n0 and r["mode"] == "AUTO"]
    return t_back, peak, cycles


@pytest.mark.anyio
async def test_a_promoted_copy_of_the_last_action_is_held_to_the_band_around_the_pid(tmp_path: Path) -> None:
    model = copy_model(tmp_path / "copy.onnx")  # before the gateway shares this event loop (onnx imports slowly)
    (tmp_path / "full").mkdir()
    async with bench(tmp_path / "full", replace={**PID_WITH_READBACKS, r"^\[safety.fallback\]":
                                                 "[safety.authority]\nband_fraction = 1.0\n\n[safety.fallback]"},
                     extra=CSTR_COOLANT_PID + FEED_HELD, time_scale=10.0) as b:
        _, peak_full, _ = await excursion(b, model)
    (tmp_path / "band").mkdir()
    async with bench(tmp_path / "band", replace=PID_WITH_READBACKS, extra=CSTR_COOLANT_PID + FEED_HELD, time_scale=10.0) as b:
        t_back, peak_band, cycles = await excursion(b, model)
        status = await b.status()
    assert status["authority"]["band"]["coolant_flow_sp"] == 20.0  # 10 % of the 0..200 span
    assert status["authority"]["clips"] > 0
    assert cycles and all(c["band"] == [20.0, 20.0] for c in cycles)
    assert any(c.get("band_clip") for c in cycles)
    # the band keeps the excursion a fraction of what the full range allowed
    print(f"T at the hand-back {t_back:.1f} K; peak with the full range {peak_full:.1f} K, within the band "
          f"{peak_band:.1f} K")
    assert peak_full - t_back > 2 * (peak_band - t_back), (t_back, peak_band, peak_full)
