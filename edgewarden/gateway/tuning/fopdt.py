"""A first-order-plus-dead-time model fitted to a step test, and PI settings from it by
Skogestad's SIMC rules.

Model: ``τ·dy/dt = −(y − y0) + K·(u(t − θ) − u0)``: gain ``K`` (PV units per action
unit), time constant ``τ`` and dead time ``θ`` (seconds). Fitted as its discrete form
``y[k+1] = a·y[k] + b·u[k − d] + c + e·k`` by least squares for every dead time ``d`` (in
samples) up to ``max_dead_s``; the trend ``e·k`` takes up a plant still drifting slowly
when the test started (one not settled), so the steps' answer is not mistaken for it.
Each fit is simulated from the first sample over the whole test;
the ``d`` whose simulation is closest to the measured PV wins (the one-step error hardly
tells dead times apart on a slow process). ``K = b / (1 − a)``, ``τ = −Δt / ln a``,
``θ = d·Δt``.

SIMC (Skogestad, "Simple analytic rules for model reduction and PID controller tuning",
2003), PI for a first-order process with dead time, closed-loop time constant ``τc``:
``Kc = τ / (K·(τc + θ))``, ``τI = min(τ, 4·(τc + θ))``. ``τc = θ`` is the rule's tight
setting; with a dead time near zero that gain is unbounded, so the default here is
``τc = max(θ, τ'/5)`` with ``τ'`` the time constant or, when it is longer, the test's
length: a loop five times faster than what the test showed. A lag-dominant process (the PV
still moving at the end of each step: an exothermic reactor, a level) needs no long
holds: ``Kc = τ/(K·(τc + θ))`` depends then on the initial slope ``K/τ`` alone, which
short steps measure well, and ``τI = 4·(τc + θ)``. In the
gateway's form (``[policy.pid]``, ``e = setpoint − pv``): ``kp = Kc``, ``ki = Kc / τI``;
a process whose PV falls as the action rises (cooling) gets negative gains, reverse acting.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["Fopdt", "PiTuning", "TuningError", "fit_fopdt", "simc"]


class TuningError(ValueError):
    """The data cannot give a model: too short, no move in the action, not a stable first-order answer."""


@dataclass(frozen=True)
class Fopdt:
    gain: float
    tau_s: float
    dead_s: float
    fit: float  # 1 − SSE/SST of the simulated PV (1 = perfect)
    samples: int
    dt_s: float

    @property
    def lag_dominant(self) -> bool:
        """The PV was still moving at the end of each step (τ longer than the test): ``K`` and
        ``τ`` apart are uncertain, their ratio (the initial slope) is not, and SIMC then
        uses only that ratio (``τI = 4·(τc + θ)``)."""
        return self.tau_s > self.dt_s * (self.samples - 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PiTuning:
    kp: float
    ki: float
    tau_c_s: float
    tau_i_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _simulate(coef: np.ndarray, d: int, y0: float, u: np.ndarray) -> np.ndarray:
    a, b, c, e = coef
    y = np.empty(len(u))
    y[0] = y0
    for k in range(len(u) - 1):
        y[k + 1] = a * y[k] + b * u[max(k - d, 0)] + c + e * k
    return y


def fit_fopdt(y: np.ndarray, u: np.ndarray, dt_s: float, max_dead_s: float = 30.0) -> Fopdt:
    """The FOPDT model of PV ``y`` answering action ``u`` (equally spaced samples ``dt_s`` apart)."""
    y, u = np.asarray(y, np.float64), np.asarray(u, np.float64)
    if not (math.isfinite(dt_s) and dt_s > 0):
        raise TuningError(f"the samples are not spaced in time (sample time {dt_s:g} s)")
    if not (math.isfinite(max_dead_s) and max_dead_s >= 0):
        raise TuningError(f"longest dead time {max_dead_s:g} s: a finite number ≥ 0")
    if len(y) != len(u) or len(y) < 20:
        raise TuningError(f"a step test needs at least 20 samples of the PV and the action ({len(y)} given)")
    if not (np.isfinite(y).all() and np.isfinite(u).all()):
        raise TuningError("the PV or the action has gaps (NaN) in the window")
    if np.ptp(u) <= 0:
        raise TuningError("the action did not move in the window: nothing to fit (run excite --signal steps)")
    sst = float(((y - y.mean()) ** 2).sum())
    if sst <= 0:
        raise TuningError("the PV did not move in the window: the action has no visible effect on it")
    best: tuple[float, np.ndarray, int] | None = None
    k = np.arange(len(y) - 1)
    for d in range(min(int(max_dead_s / dt_s), len(y) // 2) + 1):
        x = np.column_stack([y[:-1], u[np.maximum(k - d, 0)], np.ones(len(y) - 1), k])
        coef, *_ = np.linalg.lstsq(x, y[1:], rcond=None)
        if not 0.0 < coef[0] < 1.0:
            continue
        sse = float(((_simulate(coef, d, y[0], u) - y) ** 2).sum())
        if best is None or sse < best[0]:
            best = (sse, coef, d)
    if best is None:
        raise TuningError("no stable first-order answer to the action in the window (an integrating or "
                          "oscillating process needs another model)")
    sse, (a, b, _c, _e), d = best
    return Fopdt(gain=b / (1.0 - a), tau_s=-dt_s / math.log(a), dead_s=d * dt_s, fit=1.0 - sse / sst,
                 samples=len(y), dt_s=dt_s)


def simc(model: Fopdt, tau_c_s: float | None = None) -> PiTuning:
    """PI settings by SIMC, in the gateway's ``kp``/``ki`` form."""
    shown = min(model.tau_s, model.dt_s * (model.samples - 1))
    tau_c = max(model.dead_s, shown / 5.0) if tau_c_s is None else tau_c_s
    if not (tau_c > 0 and math.isfinite(tau_c)):
        raise TuningError(f"closed-loop time constant {tau_c:g} s: must be above 0")
    if model.gain == 0 or not math.isfinite(model.gain):
        raise TuningError("the process gain is zero: the action does not move the PV")
    kc = model.tau_s / (model.gain * (tau_c + model.dead_s))
    # a lag-dominant fit's τ is uncertain (only K/τ is measured): the integrating rule's τI
    tau_i = 4.0 * (tau_c + model.dead_s) if model.lag_dominant else min(model.tau_s, 4.0 * (tau_c + model.dead_s))
    return PiTuning(kp=kc, ki=kc / tau_i, tau_c_s=tau_c, tau_i_s=tau_i)
