"""Safety limits and the training reward of a plant, declared as data.

Every plant's :class:`~edgewarden.simulators.plants.base.PlantSpec` carries an :class:`Objective`:

* **limits** (:class:`Limit`): per observation a *hard* band (leaving it is what trips the
  gateway's e-stop; the Gymnasium env ends the episode there) and an optional narrower
  *soft* band (an alarm; penalised, not fatal). The example gateway configs use the same
  numbers.
* **tracking** (:class:`Tracking`): observation/target pairs with a scale; the error is
  ``(obs - target) / scale``.
* **energy**: one weight per action, applied to the action's fraction of its range
  (``(u - low) / (high - low)``, so 0 at the low bound) — pump, heater or fan effort.

The reward of one step is (all terms dimensionless, documented per plant in docs/twins.md)::

    r = - sum_i w_i * e_i**2                    tracking
        - sum_j c_j * frac_j(u)                 energy
        - soft_weight * sum_k excess_k          soft: distance outside the soft band / width
        - hard_penalty * [any hard violation]

and the safety **cost** is 1.0 on a step whose observations leave any hard band, else 0.0
(the constrained-RL convention: a budget on the expected sum of cost).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Limit:
    """Hard (and optional soft) band of one observation, in its engineering units."""

    name: str
    hard_low: float = -math.inf
    hard_high: float = math.inf
    soft_low: float | None = None
    soft_high: float | None = None

    def __post_init__(self) -> None:
        if not self.hard_low < self.hard_high:
            raise ValueError(f"limit {self.name!r}: hard_low must be < hard_high")
        lo = self.hard_low if self.soft_low is None else self.soft_low
        hi = self.hard_high if self.soft_high is None else self.soft_high
        if not self.hard_low <= lo < hi <= self.hard_high:
            raise ValueError(f"limit {self.name!r}: soft band must lie inside the hard band")

    @property
    def soft(self) -> tuple[float, float]:
        """The soft band (the hard band where no soft bound is given)."""
        lo = self.hard_low if self.soft_low is None else self.soft_low
        hi = self.hard_high if self.soft_high is None else self.soft_high
        return lo, hi


@dataclass(frozen=True)
class Tracking:
    """Tracking term: weight * ((observation - target) / scale) ** 2."""

    observation: str
    target: str
    scale: float
    weight: float = 1.0


@dataclass(frozen=True)
class Objective:
    limits: tuple[Limit, ...] = ()
    tracking: tuple[Tracking, ...] = ()
    energy: tuple[float, ...] = ()  # one weight per action (empty: no energy term)
    soft_weight: float = 1.0
    hard_penalty: float = 10.0
    # Range a training env draws each target from at reset (name -> (low, high));
    # targets not named keep their default.
    target_ranges: tuple[tuple[str, float, float], ...] = field(default=())


class Scorer:
    """Evaluates an :class:`Objective` fast for one plant (indices resolved once)."""

    def __init__(self, objective: Objective, obs_names: tuple[str, ...],
                 target_names: tuple[str, ...], act_low: np.ndarray,
                 act_high: np.ndarray) -> None:
        o = objective
        self.objective = o
        idx = {n: i for i, n in enumerate(obs_names)}
        tidx = {n: i for i, n in enumerate(target_names)}
        self._lim_idx = np.array([idx[lim.name] for lim in o.limits], dtype=np.intp)
        self._hard_lo = np.array([lim.hard_low for lim in o.limits])
        self._hard_hi = np.array([lim.hard_high for lim in o.limits])
        self._soft_lo = np.array([lim.soft[0] for lim in o.limits])
        self._soft_hi = np.array([lim.soft[1] for lim in o.limits])
        self._soft_w = np.maximum(self._soft_hi - self._soft_lo, 1e-12)
        self._trk_obs = np.array([idx[t.observation] for t in o.tracking], dtype=np.intp)
        self._trk_tgt = np.array([tidx[t.target] for t in o.tracking], dtype=np.intp)
        self._trk_scale = np.array([t.scale for t in o.tracking])
        self._trk_w = np.array([t.weight for t in o.tracking])
        n_act = len(act_low)
        self._energy = (np.asarray(o.energy, dtype=np.float64) if o.energy
                        else np.zeros(n_act))
        if self._energy.shape != (n_act,):
            raise ValueError("objective.energy needs one weight per action")
        self._a_lo = np.asarray(act_low, dtype=np.float64)
        self._a_span = np.asarray(act_high, dtype=np.float64) - self._a_lo

    def score(self, obs: np.ndarray, action: np.ndarray,
              targets: np.ndarray) -> tuple[float, dict[str, float]]:
        """(reward, terms) for one step; terms: tracking, energy, soft, hard, cost."""
        e = (obs[self._trk_obs] - targets[self._trk_tgt]) / self._trk_scale
        tracking = float(np.dot(self._trk_w, e * e))
        frac = np.clip((action - self._a_lo) / self._a_span, 0.0, 1.0)
        energy = float(np.dot(self._energy, frac))
        y = obs[self._lim_idx]
        excess = (np.maximum(self._soft_lo - y, 0.0) + np.maximum(y - self._soft_hi, 0.0))
        soft = float(np.sum(excess / self._soft_w))
        hard = bool(np.any((y < self._hard_lo) | (y > self._hard_hi)))
        o = self.objective
        reward = -(tracking + energy + o.soft_weight * soft + (o.hard_penalty if hard else 0.0))
        return reward, {"tracking": tracking, "energy": energy, "soft": soft,
                        "hard": float(hard), "cost": float(hard)}


@dataclass(frozen=True)
class Interlock:
    """A PLC interlock: while ``signal`` is above (``above``) or below ``threshold``, the
    outputs named in ``forces`` are forced to their values, whatever the mode. It releases
    once the signal is back past the threshold by ``hysteresis``. ``signal`` names an
    observation or an output (an action, as selected by the mode, before interlocks)."""

    name: str
    signal: str
    above: bool
    threshold: float
    forces: tuple[tuple[str, float], ...]
    hysteresis: float = 0.0
    description: str = ""
