"""CSTR dynamics: nominal steady state, step directions, runaway, safe action, seeding."""

from __future__ import annotations

import numpy as np
import pytest

from edgewarden.simulators.plants import make_plant, plant_names
from edgewarden.simulators.plants.cstr import (
    NOMINAL_ACTION,
    SAFE_ACTION,
    SPEC,
    T_NOMINAL,
    CstrPlant,
    steady_state,
)

T, CA, TJ = 0, 1, 2  # observation order


def run(plant: CstrPlant, action, minutes: float, dt: float = 1.0) -> np.ndarray:
    """Step ``minutes`` of simulated time; return the observations, one row per step."""
    rows = []
    for _ in range(int(round(minutes * 60 / dt))):
        plant.step(dt, np.asarray(action, dtype=float))
        rows.append(plant.observe())
    return np.array(rows)


def test_constants_and_spec() -> None:
    assert T_NOMINAL == 350.0
    assert SPEC.action_names() == ("coolant_flow", "feed_flow")
    assert SPEC.observation_names() == ("T", "CA", "Tj")
    np.testing.assert_array_equal(NOMINAL_ACTION, [100.0, 100.0])
    np.testing.assert_array_equal(SAFE_ACTION, [200.0, 0.0])
    # nominal operation sits mid-range
    np.testing.assert_allclose(NOMINAL_ACTION, (SPEC.action_low + SPEC.action_high) / 2)
    np.testing.assert_array_equal(SPEC.safe_action_array, SAFE_ACTION)
    assert "cstr" in plant_names()
    assert isinstance(make_plant("cstr", seed=3), CstrPlant)


def test_nominal_is_a_stable_steady_state_near_350K() -> None:
    p = CstrPlant()
    obs = p.observe()
    assert obs[T] == pytest.approx(350.0, abs=0.5)
    assert obs[CA] == pytest.approx(0.5, abs=0.02)
    traj = run(p, NOMINAL_ACTION, 20)
    assert np.ptp(traj[:, T]) < 1e-6  # it stays put
    # perturbed by 10 K it returns (damped oscillation)
    x = p.state
    x[1] -= 10.0
    p.state = x
    traj = run(p, NOMINAL_ACTION, 20)
    assert traj[-1, T] == pytest.approx(obs[T], abs=0.05)
    assert traj[-1, CA] == pytest.approx(obs[CA], abs=0.005)
    # the linearisation is stable
    x0 = steady_state()
    np.testing.assert_allclose(x0[[1, 0, 2]], obs)


def test_more_coolant_lowers_T_less_raises_it() -> None:
    base = CstrPlant().observe()[T]
    hi = run(CstrPlant(), [150.0, 100.0], 20)[-1, T]
    lo = run(CstrPlant(), [60.0, 100.0], 20)[-1, T]
    assert hi < base - 2.0
    assert lo > base + 5.0


def test_more_feed_raises_T() -> None:
    base = CstrPlant().observe()[T]
    assert run(CstrPlant(), [100.0, 120.0], 20)[-1, T] > base + 2.0
    assert run(CstrPlant(), [100.0, 50.0], 20)[-1, T] < base - 2.0


def test_too_little_coolant_runs_away() -> None:
    traj = run(CstrPlant(), [10.0, 100.0], 5)
    assert traj[:, T].max() > 400.0
    assert traj[-1, CA] < 0.05  # the reactant burnt off
    traj = run(CstrPlant(), [0.0, 100.0], 20)
    assert np.all(np.isfinite(traj))
    assert traj[-1, T] > 500.0


def test_safe_action_cools_from_nominal_and_from_runaway() -> None:
    p = CstrPlant()
    traj = run(p, SAFE_ACTION, 5)
    assert traj[:, T].max() <= p.spec.observations[0].default + 1.0  # no transient heat-up
    assert traj[-1, T] < 334.0
    p = CstrPlant()
    run(p, [0.0, 100.0], 10)
    assert p.observe()[T] > 500.0
    traj = run(p, SAFE_ACTION, 10)
    assert traj[-1, T] < 335.0


def test_disturbances() -> None:
    p = CstrPlant()
    assert set(p.disturbances) == {"Tf", "Tcin", "CAf"}
    p.set_disturbance("Tcin", 340.0)
    hot = run(p, NOMINAL_ACTION, 20)[-1, T]
    assert hot > 355.0
    p.reset()
    assert p.disturbances["Tcin"] == pytest.approx(331.5)
    p.set_disturbance("Tf", 340.0)
    assert run(p, NOMINAL_ACTION, 20)[-1, T] < 349.0
    with pytest.raises(KeyError, match="no disturbance"):
        p.set_disturbance("pressure", 1.0)
    with pytest.raises(ValueError):
        p.set_disturbance("Tf", float("nan"))


def test_bad_actions_and_clipping() -> None:
    p = CstrPlant()
    with pytest.raises(ValueError):
        p.step(1.0, np.array([np.nan, 100.0]))
    with pytest.raises(ValueError):
        p.step(1.0, np.array([100.0]))
    with pytest.raises(ValueError):
        p.step(-1.0, NOMINAL_ACTION)
    a, b = CstrPlant(), CstrPlant()
    run(a, [1e6, -5.0], 2)
    run(b, SAFE_ACTION, 2)
    np.testing.assert_array_equal(a.observe(), b.observe())  # clipped to the bounds


def test_deterministic_under_seed() -> None:
    def trajectory(seed: int) -> np.ndarray:
        p = CstrPlant(seed=seed, process_noise=[0.001, 0.05, 0.05], initial_spread=1.0)
        return run(p, NOMINAL_ACTION, 2, dt=0.5)

    a, b, c = trajectory(7), trajectory(7), trajectory(8)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # reset(seed) replays the same run
    p = CstrPlant(seed=1, process_noise=0.01)
    first = run(p, NOMINAL_ACTION, 1)
    p.reset(1)
    np.testing.assert_array_equal(run(p, NOMINAL_ACTION, 1), first)
    assert p.time_s == pytest.approx(60.0)


def test_step_partition_barely_matters_without_noise() -> None:
    a, b = CstrPlant(), CstrPlant()
    run(a, [60.0, 120.0], 3, dt=0.01 * 100)
    for _ in range(3 * 60 * 10):
        b.step(0.1, np.array([60.0, 120.0]))
    np.testing.assert_allclose(a.observe(), b.observe(), rtol=1e-6)
