"""The learned policies shipped in models/: each loads in the gateway's policy runtime against
its example config, its manifest's SHA-256 is the file's and the config's pin, and (slow)
``edgewarden train ship PLANT`` rebuilds it byte for byte."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from edgewarden.data import EXAMPLES, MODELS
from edgewarden.gateway.app import load_policy
from edgewarden.gateway.config import load_config
from edgewarden.training.ship import RECIPES, model_path, ship

CONFIGS = {"cstr": "cstr_learned.toml", "tanks": "tanks.toml", "hvac": "hvac.toml"}


@pytest.mark.parametrize("plant", sorted(RECIPES))
def test_shipped_model_loads_against_its_config(plant: str) -> None:
    model = model_path(plant, MODELS)
    manifest = json.loads(Path(str(model) + ".json").read_text())
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    assert manifest["sha256"] == digest and manifest["model"] == model.name
    assert manifest["plant"] == plant and manifest["reproduce"] == f"edgewarden train ship {plant}"
    s = load_config(EXAMPLES / CONFIGS[plant]).settings
    assert Path(s.policy.path).resolve() == model.resolve() and s.policy.sha256 == digest
    policy = load_policy(s)  # pin, contract against the tag map, graph checks, warm-up
    c = policy.contract
    assert c.algorithm == RECIPES[plant].algo and c.obs_stats is not None
    a = policy.infer(np.asarray(c.obs_stats.mean, np.float32))
    assert a.shape == (c.n_act,) and np.all(a >= np.asarray(c.action_low)) and np.all(a <= np.asarray(c.action_high))
    # it says how sure it is, and is sure about its own data's mean
    assert c.uncertainty is not None and c.uncertainty.method == "critic_disagreement"
    assert 0.0 <= policy.uncertainty < c.uncertainty.threshold


@pytest.mark.parametrize("plant", sorted(RECIPES))
def test_shipped_model_keeps_control_of_its_twin(plant: str) -> None:
    """In closed loop on its twin's evaluation episodes (the first 3), the learned policy's
    uncertainty never stays above its threshold for ood_cycles (3) steps in a row: a
    gateway running it would not hand over to the fallback."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "edgewarden.gateway.cli", "train", "uncertainty",
                          str(model_path(plant, MODELS)), "--episodes", "3", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["plant"] == plant and r["steps"] > 0 and r["longest_run_above"] < 3, r


@pytest.mark.slow
@pytest.mark.parametrize("plant", sorted(RECIPES))
def test_ship_reproduces_the_committed_bytes(plant: str, tmp_path: Path) -> None:
    m = ship(plant, tmp_path)
    committed = json.loads(Path(str(model_path(plant, MODELS)) + ".json").read_text())
    assert m["sha256"] == committed["sha256"]
