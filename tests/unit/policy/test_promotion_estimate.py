"""``model promote`` reads the off-policy estimate ``train report`` wrote into the model's
manifest: none, one that does not show the model better, or one made on another
controller's history is a refusal naming it; ``--force --reason`` overrides, on record."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from edgewarden.gateway.app import load_policy
from edgewarden.gateway.config import load_config
from edgewarden.gateway.errors import PolicyError
from edgewarden.gateway.policy.registry import ModelManager
from edgewarden.training.manifest import record_evidence
from tests.helpers import write_config, write_linear_policy
from tests.unit.policy.test_model_watch import Recorder

BETTER = {"verdict": "better", "difference": 0.4, "low": 0.1, "high": 0.7, "reward": "-|T - T_sp|"}


async def shadowed(tmp_path: Path, estimate: dict | None, *, required: bool = True) -> tuple[ModelManager, Recorder]:
    """A manager whose shadow agreed through a setpoint step (every other piece of evidence holds)."""
    active = write_linear_policy(tmp_path / "active.onnx")
    flag = "" if required else "promote_requires_estimate = false\n"
    s = load_config(write_config(tmp_path, policy=active, replace={
        r"^actions = \[": f"promote_after_s = 0.0\n{flag}actions = ["})).settings
    log = Recorder()
    models = ModelManager(s, load_policy(s), log)
    candidate = write_linear_policy(tmp_path / "candidate.onnx")
    if estimate is not None:
        record_evidence(candidate, "off_policy", estimate)
    await models.start_shadow(candidate, "test")
    obs, lo, hi = np.array([350.0, 0.5, 335.0, 350.0]), np.zeros(2), np.full(2, 200.0)
    for n in range(40):
        sp = 350.0 if n < 20 else 356.0  # the active loop's coolant moves 30 L/min: a transient
        obs[3] = sp
        models.shadow_step(obs, models.active.infer(obs), lo, hi, 0.1, 0.1 * n, n)
    return models, log


@pytest.mark.anyio
async def test_no_estimate_is_refused_with_the_command_that_makes_one(tmp_path: Path) -> None:
    models, _ = await shadowed(tmp_path, None)
    with pytest.raises(PolicyError, match="manifest holds no off-policy estimate.*train report MODEL.onnx --dataset"):
        models.promote("alice")


@pytest.mark.anyio
async def test_an_estimate_that_does_not_show_it_better_is_refused_with_its_figures(tmp_path: Path) -> None:
    models, _ = await shadowed(tmp_path, {**BETTER, "verdict": "not shown better", "low": -0.2})
    with pytest.raises(PolicyError, match=r"does not show it better .*\(not shown better\): difference \+0.4 "
                                          r"\[-0.2, \+0.7\].*r = -\|T - T_sp\|"):
        models.promote("alice")


@pytest.mark.parametrize(("behaviour", "named"), [
    ("pid:0123456789abcdef", "pid:0123456789abcdef"),
    ("unknown", "unknown"),  # a log that does not name its controller
    ("", "an unnamed controller"),
])
@pytest.mark.anyio
async def test_an_estimate_on_another_controllers_history_is_refused(tmp_path: Path, behaviour: str,
                                                                     named: str) -> None:
    models, _ = await shadowed(tmp_path, {**BETTER, "behaviour": behaviour})
    with pytest.raises(PolicyError, match=f"compares it with {named}, not with the running controller"):
        models.promote("alice")


@pytest.mark.anyio
async def test_an_estimate_on_a_mixed_history_is_refused_even_with_the_running_controller_in_it(
        tmp_path: Path) -> None:
    sha = hashlib.sha256(write_linear_policy(tmp_path / "same.onnx").read_bytes()).hexdigest()
    models, _ = await shadowed(tmp_path, {**BETTER, "behaviour": f"mixed: onnx:{sha[:16]}, pid:0123456789abcdef"})
    with pytest.raises(PolicyError, match="history the running controller wrote alone"):
        models.promote("alice")


@pytest.mark.anyio
async def test_a_better_estimate_on_the_running_controllers_history_promotes_and_is_on_record(
        tmp_path: Path) -> None:
    same_bytes = write_linear_policy(tmp_path / "same.onnx")  # the bytes shadowed() runs as the active model
    behaviour = f"onnx:{hashlib.sha256(same_bytes.read_bytes()).hexdigest()[:16]}"
    models, log = await shadowed(tmp_path, {**BETTER, "behaviour": behaviour})
    models.promote("alice")
    record = [p for kind, p in log.records if kind == "model_promote"][-1]
    assert record["problems"] == [] and record["evidence"]["off_policy"]["behaviour"] == behaviour


@pytest.mark.anyio
async def test_forced_or_not_required(tmp_path: Path) -> None:
    models, log = await shadowed(tmp_path, None)
    models.promote("alice", force_reason="the history holds no excitation yet; band of 10 %")
    record = [p for kind, p in log.records if kind == "model_promote"][-1]
    assert record["forced"].startswith("the history") and "no off-policy estimate" in record["problems"][0]
    (tmp_path / "off").mkdir()
    models, log = await shadowed(tmp_path / "off", None, required=False)
    models.promote("alice")
    assert [p for kind, p in log.records if kind == "model_promote"][-1]["problems"] == []
