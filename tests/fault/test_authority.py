"""Promotion evidence and bounded authority on the real CSTR twin: the case that made them
necessary.

A gateway running the PID (``kind = "pid"``) shadows a learned policy whose observations
include the valves' readbacks and which copies them: it agrees with the PID at steady
state, which used to be enough to promote it. Now the promotion is refused, naming the
copying (and, before a setpoint step, the missing transient); a policy on measurements
alone passes. Forced anyway (with a reason, on record), after a manual excursion (coolant
cut) and the hand-back the copy holds the low coolant while the reactor heats: with the
full action range it drove T far up; within the authority band around the PID's proposal
(docs/safety.md) the PID's rising coolant drags it along and the reactor stays well below."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from tests.fault.harness import Bench, bench, wait_for
from tests.helpers import CSTR_COOLANT_PID, FEED_HELD, contract

OBSERVATIONS = ("T", "CA", "Tj", "T_sp", "coolant_flow", "feed_flow")
UNITS = ("K", "mol/L", "K", "K", "L/min", "L/min")
PID_WITH_READBACKS = {
    # hand-written linear models carry no off-policy estimate: that gate has its own tests
    # (tests/unit/policy/test_promotion_estimate.py); these are about copying and the band
    r'^path = "[^"]*"': 'kind = "pid"\npromote_after_s = 1.0\npromote_requires_estimate = false',
    r"^observations = \[[^\]]*\]": "observations = " + str(list(OBSERVATIONS)).replace("'", '"'),
}


def linear_model(path: Path, weight: np.ndarray, bias: np.ndarray) -> Path:
    from edgewarden.training.onnx_graph import build_linear_policy, write_model

    c = contract("bc").replaced(observation_tags=OBSERVATIONS, observation_units=UNITS)
    return write_model(path, build_linear_policy(c, weight, bias))


def copy_model(path: Path) -> Path:
    """action = the valves' readbacks: a policy that repeats what the plant gets."""
    weight = np.zeros((2, len(OBSERVATIONS)))
    weight[0, 4] = weight[1, 5] = 1.0
    return linear_model(path, weight, np.zeros(2))


async def excursion(b: Bench, model: Path) -> tuple[float, float, list[dict]]:
    """Promote the copy (forced: its evidence does not hold), cut the coolant by hand for
    1.5 s (15 s of the twin's time), hand back; (T at the hand-back, the highest T in the
    8 s after it (80 s of the twin's time), the AUTO cycle records after it)."""
    await b.start_auto()
    await asyncio.sleep(1.0)  # the PID at steady state
    assert (await b.cmd("model", action="shadow", path=str(model)))["ok"]
    await asyncio.sleep(1.3)  # agrees at steady state: promote_after_s = 1
    reply = await b.cmd("model", action="promote", force=True, reason="test: what the band does with a copy")
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
async def test_a_policy_that_copies_its_last_action_is_refused_and_one_on_measurements_passes(tmp_path: Path) -> None:
    copy = copy_model(tmp_path / "copy.onnx")  # before the gateway shares this event loop (onnx imports slowly)
    async with bench(tmp_path, replace=PID_WITH_READBACKS, extra=CSTR_COOLANT_PID + FEED_HELD, time_scale=10.0) as b:
        await b.start_auto()
        await asyncio.sleep(1.0)
        assert (await b.cmd("model", action="shadow", path=str(copy)))["ok"]
        await asyncio.sleep(1.3)
        steady = await b.cmd("model", action="promote")  # agreement alone, at steady state
        assert not steady["ok"]
        assert "coolant_flow_sp copies its own output" in steady["error"], steady["error"]
        b.twin.image.set("T_sp", 352.0)
        await asyncio.sleep(2.0)
        stepped = await b.cmd("model", action="promote")
        assert not stepped["ok"] and "copies its own output" in stepped["error"]
        assert "transients" not in stepped["error"].split("(model promote")[0]
        unexplained = await b.cmd("model", action="promote", force=True)
        assert not unexplained["ok"] and "needs --reason" in unexplained["error"]
        st = await b.status()
        assert st["models"]["shadow_transients"] >= 1

        # a policy on the measurements alone (coolant on T - T_sp, like the PID's P part,
        # through the PID's own steady output): no echo moves it
        coolant = b.twin_setpoints()[0]
        weight = np.zeros((2, len(OBSERVATIONS)))
        weight[0, 0], weight[0, 3] = 20.0, -20.0
        bias = np.array([coolant - 20.0 * (float(b.twin.image["T"]) - 352.0), 100.0])
        measured = linear_model(tmp_path / "measured.onnx", weight, bias)
        assert (await b.cmd("model", action="shadow", path=str(measured)))["ok"]
        await asyncio.sleep(1.3)
        # upwards: the PID may have reached its coolant limit by now (it still integrates the
        # feed's ramp), and only a step that asks for less coolant moves it from there
        b.twin.image.set("T_sp", 356.0)
        await asyncio.sleep(2.0)
        reply = await b.cmd("model", action="promote")
        assert reply["ok"], reply
    promoted = [r for r in b.audit_records() if r["kind"] == "model_promote"]
    assert len(promoted) == 1 and promoted[0]["problems"] == [] and "forced" not in promoted[0]
    ev = promoted[0]["evidence"]
    assert ev["transients"]["transients"] >= 1 and ev["copying"] == []
    coolant_moves_with = ev["sensitivity"]["coolant_flow_sp"]
    assert coolant_moves_with["T"] > 0.0 and coolant_moves_with["coolant_flow"] == 0.0


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
    forced = [r for r in b.audit_records() if r["kind"] == "model_promote"]
    assert forced[0]["forced"] == "test: what the band does with a copy"
    assert any("copies its own output" in p for p in forced[0]["problems"])
    assert status["authority"]["clips"] > 0
    assert cycles and all(c["band"] == [20.0, 20.0] for c in cycles)
    assert any(c.get("band_clip") for c in cycles)
    # the band keeps the excursion a fraction of what the full range allowed
    print(f"T at the hand-back {t_back:.1f} K; peak with the full range {peak_full:.1f} K, within the band "
          f"{peak_band:.1f} K")
    assert peak_full - t_back > 2 * (peak_band - t_back), (t_back, peak_band, peak_full)
