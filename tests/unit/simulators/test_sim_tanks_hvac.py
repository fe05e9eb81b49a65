"""Tanks and HVAC dynamics: steady state, step directions, overflow/dry-run, freeze/overheat."""

from __future__ import annotations

import numpy as np
import pytest

from edgewarden.simulators.plants import make_plant, plant_names
from edgewarden.simulators.plants.hvac import HvacPlant
from edgewarden.simulators.plants.tanks import NOMINAL_ACTION as TANKS_NOMINAL
from edgewarden.simulators.plants.tanks import SAFE_ACTION as TANKS_SAFE
from edgewarden.simulators.plants.tanks import SPEC as TANKS_SPEC
from edgewarden.simulators.plants.tanks import TanksPlant, levels_at


def run(plant, action, seconds: float, dt: float) -> np.ndarray:
    rows = []
    for _ in range(int(round(seconds / dt))):
        plant.step(dt, np.asarray(action, dtype=float))
        rows.append(plant.observe())
    return np.array(rows)


def test_registry_has_three_plants() -> None:
    assert {"cstr", "tanks", "hvac"} <= set(plant_names())
    assert isinstance(make_plant("tanks"), TanksPlant)
    assert isinstance(make_plant("hvac"), HvacPlant)


# ---- tanks -------------------------------------------------------------------------------
def test_tanks_nominal_is_a_steady_state() -> None:
    p = TanksPlant()
    start = p.observe()
    np.testing.assert_allclose(start[:4], levels_at(TANKS_NOMINAL))
    end = run(p, TANKS_NOMINAL, 600, 1.0)[-1]
    np.testing.assert_allclose(end, start, atol=1e-6)
    assert 12.0 < start[0] < 12.5 and 12.5 < start[1] < 13.0  # Johansson's operating point
    assert 10.0 < start[4] < 13.0  # sump


def test_tanks_step_directions() -> None:
    base = run(TanksPlant(), TANKS_NOMINAL, 600, 1.0)[-1]
    up1 = run(TanksPlant(), TANKS_NOMINAL + [1.0, 0, 0, 0], 600, 1.0)[-1]
    assert up1[0] > base[0] + 1 and up1[3] > base[3]  # pump 1 feeds tanks 1 and 4
    assert up1[1] > base[1]  # ... and tank 2 through tank 4
    assert abs(up1[2] - base[2]) < 1e-6  # tank 3 only sees pump 2
    more_to_top = run(TanksPlant(), [3.0, 3.0, 0.4, 0.6], 600, 1.0)[-1]
    assert more_to_top[3] > base[3] and more_to_top[0] < base[0]


def test_tanks_uncontrolled_overflows_and_runs_the_sump_dry() -> None:
    rows = run(TanksPlant(), [10.0, 10.0, 0.7, 0.6], 600, 1.0)
    assert rows[-1, 0] == 20.0 and rows[-1, 1] == 20.0  # at the rim, spilling
    assert rows[-1, 4] < 1.5  # sump below the dry-run limit
    hard = {lim.name: lim for lim in TANKS_SPEC.objective.limits}
    assert rows[-1, 0] > hard["h1"].hard_high and rows[-1, 4] < hard["h_sump"].hard_low


def test_tanks_safe_action_drains_to_the_sump_and_water_is_conserved() -> None:
    p = TanksPlant()
    rows = run(p, TANKS_SAFE, 1800, 1.0)
    assert np.all(rows[-1, :4] < 0.1)
    assert rows[-1, 4] == pytest.approx(20.0, abs=0.1)
    levels = rows[:, :4] @ np.array([28.0, 32.0, 28.0, 32.0]) + rows[:, 4] * 100.0
    np.testing.assert_allclose(levels, 2000.0)


def test_tanks_seeded_spread_and_noise_are_reproducible() -> None:
    def go(seed):
        p = TanksPlant(seed=seed, process_noise=0.01, initial_spread=0.5)
        return run(p, TANKS_NOMINAL, 30, 1.0)
    np.testing.assert_array_equal(go(3), go(3))
    assert not np.array_equal(go(3), go(4))


# ---- hvac --------------------------------------------------------------------------------
def _hvac(**dist) -> HvacPlant:
    p = HvacPlant()
    for k, v in dist.items():
        p.set_disturbance(k, v)
    return p


def test_hvac_steady_state_without_daily_swings() -> None:
    calm = dict(To_amp=0.0, sun_peak=0.0, occupants=0.0)
    rows = run(_hvac(**calm), [4.0, 0.0, 300.0], 200 * 3600, 600.0)
    assert abs(rows[-1, 0] - rows[-7, 0]) < 0.01  # settled
    # heat balance at steady state: Qh = UA_total (Ta - To) with the structure in series
    ua = 50.0 + 1.2 * 1005.0 * 300.0 / 3600 + 1.0 / (1 / 2400 + 1 / 150)
    assert rows[-1, 0] == pytest.approx(5.0 + 4000.0 / ua, abs=0.05)
    assert rows[-1, 1] == pytest.approx(420.0)


def test_hvac_step_directions_and_hazards() -> None:
    def day(action, **dist):
        return run(_hvac(**dist), action, 86400, 60.0)

    nominal = day([6.0, 0.0, 600.0])
    assert 19.0 < nominal[:, 0].min() and nominal[:, 0].max() < 27.0
    assert day([8.0, 0.0, 600.0])[-1, 0] > nominal[-1, 0]  # more heat: warmer
    assert day([6.0, 3.0, 600.0])[-1, 0] < nominal[-1, 0]  # cooling: colder
    assert day([0.0, 0.0, 600.0], To_mean=-10.0)[:, 0].min() < 12.0  # freezes (hard low)
    assert day([15.0, 0.0, 600.0])[:, 0].max() > 32.0  # overheats (hard high)
    no_air = day([6.0, 0.0, 0.0])
    assert no_air[:, 1].max() > 2500.0  # CO2 past its hard limit when occupied
    assert 8.0 <= no_air[np.argmax(no_air[:, 1]), 3] <= 18.5  # ... during working hours
    assert day([6.0, 0.0, 1200.0])[:, 1].max() < 1000.0  # full air: comfortable


def test_hvac_clock_wraps_and_outdoor_follows_the_day() -> None:
    rows = run(_hvac(), [6.0, 0.0, 600.0], 86400, 60.0)
    assert rows[:, 3].min() >= 0.0 and rows[:, 3].max() < 24.0
    warm = rows[np.argmax(rows[:, 2]), 3]
    assert abs(warm - 15.0) < 0.1  # warmest at 15:00
    assert rows[:, 2].max() == pytest.approx(9.0, abs=0.01)  # 5 + 4
