"""A policy that says when it does not know, on the real CSTR twin.

The shipped learned policy (``cstr_iql.onnx``) carries an uncertainty output (its critic
heads' spread, in units of its data's 99.9th percentile). With the range and z-score
guards switched off, so that only the model's own figure judges, a jacket-temperature
sensor that drifts upwards at 4 K/s (slower than the rate-of-change check's limit, so no
trip; soon above anything in the training data, while the reactor itself is healthy) raises the figure above the contract's threshold and the gateway hands
control to the fallback within ``ood_cycles``, long before any hard limit is near; every
cycle's record carries the figure.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from edgewarden.data import MODELS
from edgewarden.gateway.policy.contract import PolicyContract
from tests.fault.harness import bench, wait_for

LEARNED = MODELS / "cstr_iql.onnx"
ONLY_UNCERTAINTY = {r"^agreement_s = 5.0": "agreement_s = 5.0\nood_margin = 100.0\nood_z = 1000.0"}


def _threshold() -> float:
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(LEARNED)).metadata_props}
    unc = PolicyContract.from_json(meta["edgewarden.contract"]).uncertainty
    assert unc is not None, "the shipped learned policy has no uncertainty output"
    return float(unc.threshold)


@pytest.mark.anyio
async def test_an_unfamiliar_input_hands_over_to_the_fallback_long_before_a_hard_limit(tmp_path: Path) -> None:
    threshold = _threshold()
    async with bench(tmp_path, replace=ONLY_UNCERTAINTY, policy=LEARNED) as b:
        await wait_for(lambda: b.mode == "READY", "READY")
        assert (await b.cmd("start"))["ok"]
        await wait_for(lambda: b.mode == "AUTO", "AUTO")
        await asyncio.sleep(3.0)
        auto = [r for r in b.audit_records() if r["kind"] == "cycle" and r["mode"] == "AUTO"]
        assert len(auto) > 30 and all(isinstance(r["unc"], float) for r in auto)
        assert max(r["unc"] for r in auto) < threshold  # familiar: the policy keeps control
        await b.twin.faults.inject("drift", "Tj", rate=4.0)
        await wait_for(lambda: b.mode == "FALLBACK", "the hand-over to the fallback", timeout=15)
        T_true = float(b.twin.plant.observe()[0])
        records = b.audit_records()
        change = [r for r in records if r["kind"] == "mode" and r["to"] == "FALLBACK"][-1]
        assert "uncertainty" in change["reason"] and "exceeds its limit" in change["reason"], change
        unsure = [r for r in records if r["kind"] == "cycle" and r.get("unc", 0.0) > threshold]
        assert unsure, "the cycles before the hand-over carry the figure"
        # the reactor itself was never near its hard limits (290-400 K): the sensor was wrong, not the plant
        assert 330.0 < T_true < 370.0, T_true
        await asyncio.sleep(1.0)
        assert b.mode == "FALLBACK"  # the input stays unfamiliar: no hand-back
