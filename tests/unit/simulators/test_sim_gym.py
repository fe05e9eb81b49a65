"""Gymnasium env on the plant models: gymnasium's checker, seeding, horizon, safety cost."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

gymnasium = pytest.importorskip("gymnasium")

from gymnasium.utils.env_checker import check_env  # noqa: E402

from edgewarden.simulators.gym_env import ENV_IDS, TwinEnv, env_id, make_env, make_vector_env  # noqa: E402
from edgewarden.simulators.plants import plant_names  # noqa: E402

PLANTS = plant_names()


def _check(env: gymnasium.Env) -> None:
    # Engineering-unit Boxes draw gymnasium's "we recommend a normalised space" advice;
    # that one advice is allowed, anything else the checker says fails the test.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=".*recommend using a symmetric and normalized")
        check_env(env, skip_render_check=False)


@pytest.mark.parametrize("plant", PLANTS)
def test_env_checker_engineering_units(plant: str) -> None:
    _check(make_env(plant, seed=0))


@pytest.mark.parametrize("plant", PLANTS)
def test_env_checker_registered_normalised_without_any_warning(plant: str) -> None:
    env = gymnasium.make(env_id(plant), normalize_actions=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)
    env.close()


def test_ids_and_spaces_follow_the_plant_spec() -> None:
    assert ENV_IDS["cstr"] == "edgewarden/Cstr-v0"
    env = make_env("cstr")
    spec = env.unwrapped.spec_plant
    assert env.observation_names == ("T", "CA", "Tj", "T_sp")  # examples/cstr.toml order
    assert env.action_names == ("coolant_flow", "feed_flow") == spec.action_names()
    np.testing.assert_array_equal(env.action_space.low, [0.0, 0.0])
    np.testing.assert_array_equal(env.action_space.high, [200.0, 200.0])
    assert env.observation_units == ("K", "mol/L", "K", "K")
    obs, _ = env.reset(seed=0)
    assert obs[3] == 350.0 and abs(obs[0] - 350.0) < 0.1


@pytest.mark.parametrize("plant", PLANTS)
def test_seeded_reset_is_reproducible(plant: str) -> None:
    def rollout(seed: int) -> np.ndarray:
        env = make_env(plant, process_noise=0.01, randomize_targets=True)
        obs, _ = env.reset(seed=seed)
        env.action_space.seed(seed)
        rows = [obs]
        for _ in range(20):
            obs, *_ = env.step(env.action_space.sample())
            rows.append(obs)
        return np.array(rows)

    np.testing.assert_array_equal(rollout(5), rollout(5))
    assert not np.array_equal(rollout(5), rollout(6))


@pytest.mark.parametrize("plant", PLANTS)
def test_truncation_at_the_horizon(plant: str) -> None:
    env = make_env(plant, seed=0, horizon_s=10 * TwinEnv(plant).dt_s)
    nominal = env.unwrapped.spec_plant.nominal_action
    for k in range(10):
        _, reward, terminated, truncated, info = env.step(nominal)
        assert not terminated and np.isfinite(reward) and info["cost"] == 0.0
        assert truncated == (k == 9)


def test_cstr_runaway_costs_and_terminates() -> None:
    env = make_env("cstr", seed=0)
    for _ in range(300):
        obs, reward, terminated, truncated, info = env.step(np.array([0.0, 100.0]))
        if terminated:
            break
    assert terminated and not truncated
    assert info["cost"] == 1.0 and info["hard"] == 1.0 and obs[0] > 400.0
    assert reward < -10.0
    env2 = make_env("cstr", seed=0, terminate_on_hard=False, horizon_s=120)
    done = False
    while not done:
        _, _, terminated, done, info = env2.step(np.array([0.0, 100.0]))
        assert not terminated
    assert info["cost"] == 1.0


def test_reward_prefers_tracking_and_targets_can_change() -> None:
    env = make_env("cstr", seed=0)
    _, r_on, *_ = env.step(np.array([100.0, 100.0]))
    env.set_targets({"T_sp": 360.0})
    obs, r_off, *_ = env.step(np.array([100.0, 100.0]))
    assert obs[3] == 360.0 and r_off < r_on
    with pytest.raises(KeyError):
        env.set_targets({"nope": 1.0})
    obs, _ = env.reset(seed=1, options={"targets": {"T_sp": 340.0}})
    assert obs[3] == 340.0


def test_bad_actions_are_refused() -> None:
    env = make_env("cstr", seed=0)
    with pytest.raises(ValueError):
        env.step(np.array([np.nan, 1.0]))
    with pytest.raises(ValueError):
        env.step(np.array([1.0]))


def test_normalised_actions_map_onto_the_bounds() -> None:
    env = make_env("cstr", seed=0, normalize_actions=True)
    np.testing.assert_allclose(env.engineering_action(np.array([-1.0, 1.0])), [0.0, 200.0])
    np.testing.assert_allclose(env.engineering_action(np.array([0.0, 0.0])), [100.0, 100.0])


@pytest.mark.parametrize("plant", PLANTS)
def test_vector_env_steps_a_batch(plant: str) -> None:
    venv = make_vector_env(plant, 3, seed=0, randomize_targets=True)
    obs, _ = venv.reset(seed=0)
    assert obs.shape == (3, venv.single_observation_space.shape[0])
    nominal = TwinEnv(plant).spec_plant.nominal_action
    obs, reward, terminated, truncated, info = venv.step(np.tile(nominal, (3, 1)))
    assert reward.shape == (3,) and info["cost"].shape == (3,)
    venv.close()


def test_twin_servers_do_not_import_gymnasium() -> None:
    import subprocess
    import sys

    code = ("import sys, edgewarden.simulators.twin, edgewarden.simulators.cli, edgewarden.simulators.plants; "
            "sys.exit('gymnasium' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
