"""The shipped demo policy is exactly what the documented command produces, and it loads."""

from __future__ import annotations

from pathlib import Path

from gateway.app import load_policy
from gateway.config import load_config
from gateway.policy.contract import PolicyContract
from tests.helpers import EXAMPLE
from training.baseline import build, tune

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "cstr_baseline.onnx"


def test_shipped_baseline_is_reproducible() -> None:
    assert build(tune()) == SHIPPED.read_bytes(), (
        "models/cstr_baseline.onnx differs from `edgewarden train baseline cstr --out "
        "models/cstr_baseline.onnx`; rerun the command and commit the file")


def test_shipped_baseline_fits_the_example_config() -> None:
    policy = load_policy(load_config(EXAMPLE).settings)
    assert isinstance(policy.contract, PolicyContract)
    assert policy.contract.algorithm == "proportional-baseline"
