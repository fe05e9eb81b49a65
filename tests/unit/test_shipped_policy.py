"""The shipped demo policy is exactly what the documented command produces, and it loads."""

from __future__ import annotations


from edgewarden.data import MODELS
from edgewarden.gateway.app import load_policy
from edgewarden.gateway.config import load_config
from edgewarden.gateway.policy.contract import PolicyContract
from tests.helpers import EXAMPLE
from edgewarden.training.baseline import build, tune

SHIPPED = MODELS / "cstr_baseline.onnx"


def test_shipped_baseline_is_reproducible() -> None:
    assert build(tune()) == SHIPPED.read_bytes(), (
        "models/cstr_baseline.onnx differs from `edgewarden train baseline cstr --out "
        "models/cstr_baseline.onnx`; rerun the command and commit the file")


def test_shipped_baseline_fits_the_example_config() -> None:
    policy = load_policy(load_config(EXAMPLE).settings)
    assert isinstance(policy.contract, PolicyContract)
    assert policy.contract.algorithm == "proportional-baseline"
