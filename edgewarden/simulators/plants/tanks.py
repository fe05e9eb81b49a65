"""Quadruple-tank process (Johansson 2000) with a finite sump: level control.

Four tanks; pump 1 lifts water from the sump and a three-way valve splits it, a fraction
``valve1`` to tank 1 (lower left) and the rest to tank 4 (upper right); pump 2 likewise
with ``valve2`` to tank 2 (lower right) and the rest to tank 3 (upper left). Tank 3 drains
into tank 1, tank 4 into tank 2, tanks 1 and 2 into the sump (Torricelli outflow)::

    dh1/dt = (-a1 sqrt(2 g h1) + a3 sqrt(2 g h3) + g1 k1 s v1) / A1
    dh2/dt = (-a2 sqrt(2 g h2) + a4 sqrt(2 g h4) + g2 k2 s v2) / A2
    dh3/dt = (-a3 sqrt(2 g h3) + (1 - g2) k2 s v2) / A3
    dh4/dt = (-a4 sqrt(2 g h4) + (1 - g1) k1 s v1) / A4
    s      = clip(h_sump / H_DRY, 0, 1)          (pumps lose suction as the sump runs dry)
    h_sump = (W - sum A_i h_i) / A_S             (the water is conserved)

A tank is ``H`` = 20 cm tall: at the rim the excess spills back into the sump
(overflow). With both pumps at full speed the tanks fill past the rim and the sump runs
dry (the two hazards: overflow and pump dry-run); with the pumps off all water drains
back to the sump (the safe state). Time is in seconds; levels in cm; pump voltages in V.
Parameters are Johansson's minimum-phase set (g1 = 0.70, g2 = 0.60 nominal).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from edgewarden.simulators.plants.base import PlantModel, PlantSpec, Signal
from edgewarden.simulators.plants.objective import Interlock, Limit, Objective, Tracking

G = 981.0  # cm/s^2
A = np.array([28.0, 32.0, 28.0, 32.0])  # tank cross-sections, cm^2
a = np.array([0.071, 0.057, 0.071, 0.057])  # outlet hole areas, cm^2
K1, K2 = 3.33, 3.35  # pump gains, cm^3/(V s)
H = 20.0  # tank height (rim), cm
A_SUMP = 100.0  # sump cross-section, cm^2
W_TOTAL = 2000.0  # water in the system, cm^3
H_DRY = 1.0  # sump level below which a pump loses suction, cm
V_MAX = 10.0  # pump voltage range, V

NOMINAL_ACTION = np.array([3.0, 3.0, 0.70, 0.60])  # v1, v2, valve1, valve2
SAFE_ACTION = np.array([0.0, 0.0, 0.70, 0.60])  # pumps off (valves left as they are)


def levels_at(action: np.ndarray) -> np.ndarray:
    """Closed-form steady levels (h1..h4) for a constant action (sump not dry, no spill)."""
    v1, v2, g1, g2 = (float(x) for x in action)
    q3 = (1 - g2) * K2 * v2
    q4 = (1 - g1) * K1 * v1
    h3 = (q3 / a[2]) ** 2 / (2 * G)
    h4 = (q4 / a[3]) ** 2 / (2 * G)
    h1 = ((g1 * K1 * v1 + q3) / a[0]) ** 2 / (2 * G)
    h2 = ((g2 * K2 * v2 + q4) / a[1]) ** 2 / (2 * G)
    return np.array([h1, h2, h3, h4])


_NOMINAL_LEVELS = levels_at(NOMINAL_ACTION)

SPEC = PlantSpec(
    name="tanks",
    description="Quadruple-tank level process (Johansson) with a finite sump",
    observations=(
        Signal("h1", "cm", 0.0, H, "level, lower left tank", float(_NOMINAL_LEVELS[0])),
        Signal("h2", "cm", 0.0, H, "level, lower right tank", float(_NOMINAL_LEVELS[1])),
        Signal("h3", "cm", 0.0, H, "level, upper left tank", float(_NOMINAL_LEVELS[2])),
        Signal("h4", "cm", 0.0, H, "level, upper right tank", float(_NOMINAL_LEVELS[3])),
        Signal("h_sump", "cm", 0.0, W_TOTAL / A_SUMP, "sump level",
               float((W_TOTAL - A @ _NOMINAL_LEVELS) / A_SUMP)),
    ),
    actions=(
        Signal("pump1", "V", 0.0, V_MAX, "pump 1 voltage", float(NOMINAL_ACTION[0])),
        Signal("pump2", "V", 0.0, V_MAX, "pump 2 voltage", float(NOMINAL_ACTION[1])),
        Signal("valve1", "1", 0.0, 1.0, "valve 1 split: fraction of pump 1 to tank 1",
               float(NOMINAL_ACTION[2])),
        Signal("valve2", "1", 0.0, 1.0, "valve 2 split: fraction of pump 2 to tank 2",
               float(NOMINAL_ACTION[3])),
    ),
    safe_action=tuple(float(v) for v in SAFE_ACTION),
    targets=(
        Signal("h1_sp", "cm", 0.0, H, "tank 1 level setpoint", round(float(_NOMINAL_LEVELS[0]), 1)),
        Signal("h2_sp", "cm", 0.0, H, "tank 2 level setpoint", round(float(_NOMINAL_LEVELS[1]), 1)),
    ),
    states=("h1", "h2", "h3", "h4"),
    # Overflow above 19 cm on any tank, pump dry-run below 1.5 cm in the sump.
    # Reward: level tracking in cm, pump effort (0.05 per pump at full voltage).
    objective=Objective(
        limits=(Limit("h1", -1.0, 19.0, 3.0, 17.0), Limit("h2", -1.0, 19.0, 3.0, 17.0),
                Limit("h3", -1.0, 19.0, None, 17.0), Limit("h4", -1.0, 19.0, None, 17.0),
                Limit("h_sump", 1.5, 100.0, 3.0, None)),
        tracking=(Tracking("h1", "h1_sp", 1.0), Tracking("h2", "h2_sp", 1.0)),
        energy=(0.05, 0.05, 0.0, 0.0),
        soft_weight=1.0,
        hard_penalty=10.0,
        target_ranges=(("h1_sp", 8.0, 15.0), ("h2_sp", 8.0, 15.0)),
    ),
    # High-level switches stop the pump that fills the tank; a low-level switch in the
    # sump stops both pumps (dry-run protection). 1 cm hysteresis each.
    interlocks=(
        Interlock("high_h1", "h1", True, 19.5, (("pump1", 0.0),), 1.0, "tank 1 high: pump 1 off"),
        Interlock("high_h4", "h4", True, 19.5, (("pump1", 0.0),), 1.0, "tank 4 high: pump 1 off"),
        Interlock("high_h2", "h2", True, 19.5, (("pump2", 0.0),), 1.0, "tank 2 high: pump 2 off"),
        Interlock("high_h3", "h3", True, 19.5, (("pump2", 0.0),), 1.0, "tank 3 high: pump 2 off"),
        Interlock("low_sump", "h_sump", False, 2.0, (("pump1", 0.0), ("pump2", 0.0)), 1.0,
                  "sump low: both pumps off (dry-run protection)"),
    ),
)


class TanksPlant(PlantModel):
    """The quadruple tank. Starts (and resets) at the nominal steady levels."""

    spec = SPEC
    integration_step_s = 0.5  # slowest tank constant ~ 60 s, fastest ~ 10 s near empty
    control_period_s = 1.0
    horizon_s = 900.0

    def __init__(self, seed: int | None = 0, process_noise: float | np.ndarray = 0.0,
                 initial_spread: float = 0.0) -> None:
        self._spread = float(initial_spread)  # std (cm) of a random level offset at reset
        super().__init__(seed=seed, process_noise=process_noise)

    def _initial_state(self, rng: np.random.Generator) -> np.ndarray:
        x = _NOMINAL_LEVELS.copy()
        if self._spread:
            x = np.clip(x + self._spread * rng.standard_normal(4), 0.0, H)
        return x

    def _rhs(self, x: np.ndarray, u: np.ndarray, d: Mapping[str, float]) -> np.ndarray:
        h = np.clip(x, 0.0, H)
        out = a * np.sqrt(2 * G * h)
        sump = (W_TOTAL - float(A @ h)) / A_SUMP
        s = min(max(sump / H_DRY, 0.0), 1.0)
        q1 = K1 * s * u[0]
        q2 = K2 * s * u[1]
        g1, g2 = u[2], u[3]
        inflow = np.array([g1 * q1 + out[2], g2 * q2 + out[3], (1 - g2) * q2, (1 - g1) * q1])
        dh = (inflow - out) / A
        # at the rim the excess spills to the sump
        full = (h >= H) & (dh > 0)
        dh[full] = 0.0
        return dh

    def _observe(self, x: np.ndarray) -> np.ndarray:
        h = np.clip(x, 0.0, H)
        return np.append(h, (W_TOTAL - float(A @ h)) / A_SUMP)

    def _project(self, x: np.ndarray) -> np.ndarray:
        return np.clip(x, 0.0, H)
