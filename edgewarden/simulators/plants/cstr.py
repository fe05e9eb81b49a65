"""Exothermic CSTR (A -> B, first order, Arrhenius) with a cooling jacket.

Reactor (well mixed, constant volume V; time in minutes inside this module)::

    dCA/dt = q/V (CAf - CA) - k(T) CA
    dT/dt  = q/V (Tf - T) + (-dH)/(rho Cp) k(T) CA + UA/(V rho Cp) (Tj - T)
    dTj/dt = Fc/Vj (Tcin - Tj) + UA/(Vj rho_j Cp_j) (T - Tj)
    k(T)   = k0 exp(-E/R / T)

q is ``feed_flow`` and Fc is ``coolant_flow`` (the actions, L/min). Kinetics and reactor
thermodynamics are the classic Seborg/Henson set (V, CAf, Tf, k0, E/R, dH, rho Cp).
With the classic UA = 5e4 J/(min K) the point T = 350 K, CA = 0.5 mol/L is the *unstable*
middle steady state (heat generation slope 3.7 /min against a removal slope of at most
3.1 /min), and a jacket in series only lowers the removal slope further. So that the
nominal point is a stable one, as a supervised plant should be, this twin uses
UA = 2e5 J/(min K) and a tempered-water jacket (Vj = 20 L, Tcin = 331.5 K).
See docs/twins.md for the numbers this gives.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from edgewarden.simulators.plants.base import PlantModel, PlantSpec, Signal
from edgewarden.simulators.plants.objective import Interlock, Limit, Objective, Tracking

# Reactor (Seborg/Henson), per minute.
V = 100.0  # L
K0 = 7.2e10  # 1/min
E_R = 8750.0  # K
DH = -5.0e4  # J/mol
RHO_CP = 239.0  # J/(L K)
CAF_NOMINAL = 1.0  # mol/L
TF_NOMINAL = 350.0  # K
# Jacket (this twin's choice, see the module docstring).
UA = 2.0e5  # J/(min K)
VJ = 20.0  # L
RHO_CP_J = 4184.0  # J/(L K), water
TCIN_NOMINAL = 331.5  # K

COOLANT_MAX = 200.0  # L/min
FEED_MAX = 200.0  # L/min

T_NOMINAL = 350.0  # K, the design operating temperature (default of T_sp)
NOMINAL_ACTION = np.array([100.0, 100.0])  # coolant_flow, feed_flow [L/min]
SAFE_ACTION = np.array([COOLANT_MAX, 0.0])  # full cooling, feed shut

SPEC = PlantSpec(
    name="cstr",
    description="Exothermic CSTR A->B with a cooling jacket (Seborg/Henson kinetics)",
    observations=(
        Signal("T", "K", 250.0, 600.0, "reactor temperature", T_NOMINAL),
        Signal("CA", "mol/L", 0.0, 2.0, "concentration of A in the reactor", 0.5),
        Signal("Tj", "K", 250.0, 600.0, "jacket (coolant) temperature", 331.0),
    ),
    actions=(
        Signal("coolant_flow", "L/min", 0.0, COOLANT_MAX, "jacket coolant flow",
               float(NOMINAL_ACTION[0])),
        Signal("feed_flow", "L/min", 0.0, FEED_MAX, "reactor feed flow (= outflow)",
               float(NOMINAL_ACTION[1])),
    ),
    safe_action=tuple(float(v) for v in SAFE_ACTION),
    targets=(Signal("T_sp", "K", 300.0, 400.0, "reactor temperature setpoint", T_NOMINAL),),
    disturbances=(
        Signal("Tf", "K", 300.0, 400.0, "feed temperature", TF_NOMINAL),
        Signal("Tcin", "K", 270.0, 360.0, "coolant inlet temperature", TCIN_NOMINAL),
        Signal("CAf", "mol/L", 0.0, 2.0, "feed concentration of A", CAF_NOMINAL),
    ),
    states=("CA", "T", "Tj"),
    # Limits as in examples/cstr.toml. Reward: temperature tracking in units of 5 K,
    # coolant pumping effort (0.05 at full flow), soft/hard temperature penalties.
    objective=Objective(
        limits=(Limit("T", 290.0, 400.0, 320.0, 380.0), Limit("CA", 0.0, 1.2)),
        tracking=(Tracking("T", "T_sp", scale=5.0),),
        energy=(0.05, 0.0),
        soft_weight=1.0,
        hard_penalty=10.0,
        target_ranges=(("T_sp", 335.0, 365.0),),
    ),
    interlocks=(
        Interlock("high_temperature", "T", True, 390.0,
                  (("coolant_flow", COOLANT_MAX), ("feed_flow", 0.0)), hysteresis=10.0,
                  description="T above 390 K: full cooling, feed shut (releases below 380 K)"),
    ),
)


def rhs_per_minute(x: np.ndarray, u: np.ndarray, d: Mapping[str, float]) -> np.ndarray:
    """dx/dt per minute for state (CA, T, Tj) and action (coolant_flow, feed_flow)."""
    ca, t, tj = x[0], x[1], x[2]
    fc, q = u[0], u[1]
    k = K0 * np.exp(-E_R / t)
    r = k * ca
    dca = q / V * (d["CAf"] - ca) - r
    dt = q / V * (d["Tf"] - t) + (-DH) / RHO_CP * r + UA / (V * RHO_CP) * (tj - t)
    dtj = fc / VJ * (d["Tcin"] - tj) + UA / (VJ * RHO_CP_J) * (t - tj)
    return np.array([dca, dt, dtj])


def steady_state(
    action: np.ndarray = NOMINAL_ACTION, disturbances: Mapping[str, float] | None = None
) -> np.ndarray:
    """The steady state (CA, T, Tj) reached from the nominal point, by Newton's method."""
    d = {s.name: s.default for s in SPEC.disturbances} | dict(disturbances or {})
    u = np.asarray(action, dtype=np.float64)
    x = np.array([0.5, 350.0, 331.0])
    for _ in range(50):
        f = rhs_per_minute(x, u, d)
        jac = np.empty((3, 3))
        for i in range(3):
            e = np.zeros(3)
            e[i] = 1e-6 * max(1.0, abs(x[i]))
            jac[:, i] = (rhs_per_minute(x + e, u, d) - rhs_per_minute(x - e, u, d)) / (2 * e[i])
        dx = np.linalg.solve(jac, -f)
        x = x + dx
        if np.max(np.abs(dx)) < 1e-10:
            break
    return x


class CstrPlant(PlantModel):
    """The CSTR twin. Starts (and resets) at the nominal steady state."""

    spec = SPEC
    integration_step_s = 0.5  # fastest mode is ~2.5 /min: RK4 at 0.5 s is far inside

    def __init__(self, seed: int | None = 0, process_noise: float | np.ndarray = 0.0,
                 initial_spread: float = 0.0) -> None:
        # initial_spread: std of a random offset on T (K) and Tj (K) at reset, drawn
        # from the seed; 0 starts exactly at the nominal steady state.
        self._spread = float(initial_spread)
        super().__init__(seed=seed, process_noise=process_noise)

    def _initial_state(self, rng: np.random.Generator) -> np.ndarray:
        x = _NOMINAL_STATE.copy()
        if self._spread:
            x[1:] += self._spread * rng.standard_normal(2)
        return x

    def _rhs(self, x: np.ndarray, u: np.ndarray, d: Mapping[str, float]) -> np.ndarray:
        return rhs_per_minute(x, u, d) / 60.0

    def _observe(self, x: np.ndarray) -> np.ndarray:
        return np.array([x[1], x[0], x[2]])  # T, CA, Tj

    def _max_step(self, x: np.ndarray, u: np.ndarray, d: Mapping[str, float]) -> float:
        # RK4 is stable for h * rate < 2.78 on the real axis; the reaction rate k(T)
        # grows to ~200 /s in a full runaway, so bound h by the fastest rate (per second).
        k = K0 * np.exp(-E_R / max(x[1], 1.0))
        rate = (k + u[1] / V + UA / (V * RHO_CP) + u[0] / VJ + UA / (VJ * RHO_CP_J)) / 60.0
        return 2.5 / rate

    def _project(self, x: np.ndarray) -> np.ndarray:
        if x[0] < 0.0:
            x[0] = 0.0
        return x


_NOMINAL_STATE = steady_state()
