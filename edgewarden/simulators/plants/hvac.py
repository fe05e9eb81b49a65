"""One building zone (an office of 100 m2, 300 m3): air + structure (2R2C) and CO2.

States: zone air temperature ``Ta`` (degC), structure (slab, walls) temperature ``Tm``
(degC), zone CO2 ``C`` (ppm) and the time of day ``clock`` (s since midnight, advances
at 1 s/s and wraps), which drives the outdoor temperature, the sun and the occupancy::

    Ca dTa/dt = (Tm - Ta)/R_am + (To - Ta)/R_ao + rho cp Fv (To - Ta)
                + 1000 (Qh - Qc) + n P_occ + f_sun Q_sun
    Cm dTm/dt = (Ta - Tm)/R_am + (To - Tm)/R_mo + (1 - f_sun) Q_sun
    V  dC/dt  = Fv (C_out - C) + 1e6 n G_co2
    To(t)     = To_mean + To_amp sin(2 pi (t - 9 h) / 24 h)     (coldest 03:00, warmest 15:00)
    Q_sun(t)  = Q_sun_peak max(0, sin(pi (t - 6 h) / 12 h))     (06:00 to 18:00)
    n(t)      = occupants on working hours (08:00 to 18:00), else 0

``Qh``/``Qc`` are the heating/cooling powers (kW thermal, the actions) and ``Fv`` the
outdoor-air ventilation (m3/h, action). No heat recovery, so ventilation costs heat in
winter. Uncontrolled, the zone freezes with the heating off in winter, overheats with it
full on, and CO2 climbs past 2500 ppm in an occupied zone without ventilation.
Parameters are typical of a medium-weight office; see docs/twins.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from edgewarden.simulators.plants.base import PlantModel, PlantSpec, Signal
from edgewarden.simulators.plants.objective import Interlock, Limit, Objective, Tracking

C_AIR = 2.0e6  # J/K, air + furniture
C_MASS = 3.0e7  # J/K, slab and walls
R_AM = 1.0 / 2400.0  # K/W, air <-> structure (h = 8 W/m2K over 300 m2)
R_AO = 1.0 / 50.0  # K/W, air <-> outside (windows, infiltration)
R_MO = 1.0 / 150.0  # K/W, structure <-> outside (envelope)
RHO_CP = 1.2 * 1005.0  # J/(m3 K), air
VOLUME = 300.0  # m3
P_OCC = 100.0  # W sensible heat per occupant
G_CO2 = 5.0e-6  # m3/s CO2 exhaled per occupant
CO2_OUT = 420.0  # ppm
F_SUN = 0.3  # share of solar gain into the air (the rest into the structure)
Q_MAX = 15.0  # kW, heating and cooling capacity
FV_MAX = 1200.0  # m3/h (4 air changes per hour)
DAY = 86400.0

NOMINAL_ACTION = np.array([6.0, 0.0, 600.0])  # heating kW, cooling kW, ventilation m3/h
SAFE_ACTION = np.array([0.0, 0.0, 300.0])  # no heating/cooling, minimum fresh air

SPEC = PlantSpec(
    name="hvac",
    description="Office zone: 2R2C thermal model, CO2, outdoor and occupancy disturbances",
    observations=(
        Signal("T_zone", "degC", -20.0, 50.0, "zone air temperature", 21.0),
        Signal("CO2", "ppm", 0.0, 10000.0, "zone CO2 concentration", CO2_OUT),
        Signal("T_out", "degC", -40.0, 50.0, "outdoor temperature", 5.0),
        Signal("hour", "h", 0.0, 24.0, "time of day (PLC clock)", 6.0),
    ),
    actions=(
        Signal("heating", "kW", 0.0, Q_MAX, "heating power (thermal)", float(NOMINAL_ACTION[0])),
        Signal("cooling", "kW", 0.0, Q_MAX, "cooling power (thermal)", float(NOMINAL_ACTION[1])),
        Signal("ventilation", "m3/h", 0.0, FV_MAX, "outdoor-air flow",
               float(NOMINAL_ACTION[2])),
    ),
    safe_action=tuple(float(v) for v in SAFE_ACTION),
    targets=(Signal("T_zone_sp", "degC", 15.0, 28.0, "zone temperature setpoint", 21.0),),
    disturbances=(
        Signal("To_mean", "degC", -30.0, 40.0, "daily mean outdoor temperature", 5.0),
        Signal("To_amp", "K", 0.0, 15.0, "half the daily outdoor swing", 4.0),
        Signal("sun_peak", "kW", 0.0, 20.0, "solar gain at noon", 3.0),
        Signal("occupants", "1", 0.0, 50.0, "people in the zone on working hours", 20.0),
    ),
    states=("Ta", "Tm", "C", "clock"),
    # Comfort band 19..25 degC (soft), 12..32 degC hard; CO2 1000 ppm soft, 2500 hard.
    # Reward: temperature tracking in K, energy with COP 3 for both (1/3 per 15 kW),
    # fan energy 0.1 at full flow.
    objective=Objective(
        limits=(Limit("T_zone", 12.0, 32.0, 19.0, 25.0), Limit("CO2", -1.0, 2500.0, None, 1000.0)),
        tracking=(Tracking("T_zone", "T_zone_sp", 1.0),),
        energy=(1 / 3, 1 / 3, 0.1),
        soft_weight=1.0,
        hard_penalty=10.0,
        target_ranges=(("T_zone_sp", 20.0, 23.0),),
    ),
    interlocks=(
        Interlock("heat_cool", "cooling", True, 0.0, (("heating", 0.0),),
                  description="cooling on: heating off (never both)"),
        Interlock("overheat", "T_zone", True, 30.0, (("heating", 0.0),), 2.0,
                  "zone above 30 degC: heating off"),
        Interlock("frost", "T_zone", False, 14.0, (("cooling", 0.0),), 2.0,
                  "zone below 14 degC: cooling off"),
        Interlock("co2_high", "CO2", True, 2000.0, (("ventilation", FV_MAX),), 500.0,
                  "CO2 above 2000 ppm: full ventilation"),
    ),
)


def _outdoor(clock: float, d: Mapping[str, float]) -> float:
    return d["To_mean"] + d["To_amp"] * math.sin(2 * math.pi * (clock - 9 * 3600) / DAY)


def _sun(clock: float, d: Mapping[str, float]) -> float:
    return d["sun_peak"] * max(0.0, math.sin(math.pi * (clock - 6 * 3600) / (12 * 3600)))


def _occupants(clock: float, d: Mapping[str, float]) -> float:
    return d["occupants"] if 8 * 3600 <= clock % DAY < 18 * 3600 else 0.0


class HvacPlant(PlantModel):
    """The office zone. Resets to ``start_hour`` with air/structure at 20 degC."""

    spec = SPEC
    integration_step_s = 60.0  # fastest mode ~ Ca / (1/R_am + ...) ~ 700 s: h lambda < 0.1
    control_period_s = 60.0
    horizon_s = DAY

    def __init__(self, seed: int | None = 0, process_noise: float | np.ndarray = 0.0,
                 start_hour: float = 6.0, initial_spread: float = 0.0) -> None:
        self._start = float(start_hour) * 3600.0
        self._spread = float(initial_spread)  # std (K) of a random offset on Ta and Tm
        super().__init__(seed=seed, process_noise=process_noise)

    def _initial_state(self, rng: np.random.Generator) -> np.ndarray:
        x = np.array([20.0, 20.0, CO2_OUT, self._start % DAY])
        if self._spread:
            x[:2] += self._spread * rng.standard_normal(2)
        return x

    def _rhs(self, x: np.ndarray, u: np.ndarray, d: Mapping[str, float]) -> np.ndarray:
        ta, tm, c, clock = x[0], x[1], x[2], x[3]
        to = _outdoor(clock, d)
        sun = 1000.0 * _sun(clock, d)
        n = _occupants(clock, d)
        fv = u[2] / 3600.0  # m3/s
        q_air = ((tm - ta) / R_AM + (to - ta) / R_AO + RHO_CP * fv * (to - ta)
                 + 1000.0 * (u[0] - u[1]) + n * P_OCC + F_SUN * sun)
        q_mass = (ta - tm) / R_AM + (to - tm) / R_MO + (1 - F_SUN) * sun
        dc = (fv * (CO2_OUT - c) + 1e6 * n * G_CO2) / VOLUME
        return np.array([q_air / C_AIR, q_mass / C_MASS, dc, 1.0])

    def _observe(self, x: np.ndarray) -> np.ndarray:
        return np.array([x[0], x[2], _outdoor(x[3], self._disturbances), x[3] / 3600.0])

    def _project(self, x: np.ndarray) -> np.ndarray:
        if x[3] >= DAY:
            x[3] -= DAY
        if x[2] < 0.0:
            x[2] = 0.0
        return x
