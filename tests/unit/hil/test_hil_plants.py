"""The bench's tanks/HVAC configs and policies are what their generator makes, and valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgewarden.gateway.config import load_config
from edgewarden.gateway.tomlwrite import dumps_toml
from edgewarden.hil.models import plants

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("plant", sorted(plants.PLANTS))
def test_committed_config_matches_generator_and_loads(plant: str) -> None:
    path = REPO / "edgewarden" / "hil" / "configs" / f"{plant}.toml"
    body = path.read_text().split("\n", 1)[1]
    assert body == dumps_toml(plants.config(plant)), "regenerate: python -m edgewarden.hil.models.plants"
    loaded = load_config(path)
    assert loaded.settings.policy.path.exists()


@pytest.mark.parametrize("plant", sorted(plants.PLANTS))
def test_committed_policy_matches_generator(plant: str) -> None:
    pytest.importorskip("onnx")
    assert (REPO / "edgewarden" / "hil" / "models" / f"{plant}_p.onnx").read_bytes() == plants.policy(plant)


def test_narrow_model_matches_generator() -> None:
    pytest.importorskip("onnx")
    from edgewarden.hil.models.build import narrow

    assert (REPO / "edgewarden" / "hil" / "models" / "cstr_narrow.onnx").read_bytes() == narrow()
