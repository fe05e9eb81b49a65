"""The reward of a plant that records none: a small expression a controls engineer can
read, stored with the dataset so that training, ``train report``'s off-policy estimate
and anyone rereading the file compute the same number.

    r = − Σ_track |pv − sp|                         tracking error (the next observation)
        − move · Σ_j |a_j − a_prev_j| / span_j      move effort (share of each action's span)
        − limit · Σ_limits max(0, pv − high, low − pv)   distance beyond soft limits

``sp`` is an observation tag (a setpoint the PLC reports) or a number (a PLC whose
setpoint is a constant). ``train from-audit --reward-track PV=SP --reward-move W
--reward-limit PV=LOW:HIGH --reward-limit-weight W`` writes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["RewardError", "RewardSpec"]


class RewardError(ValueError):
    """A reward term that does not fit the data (an unknown tag, a bound that is not a number)."""


@dataclass(frozen=True)
class RewardSpec:
    track: tuple[tuple[str, str | float], ...] = ()
    move: float = 0.0  # weight of the summed |Δa| / span
    limits: tuple[tuple[str, float, float], ...] = ()  # (pv, low, high)
    limit_weight: float = 1.0
    _index: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def defined(self) -> bool:
        return bool(self.track or self.move or self.limits)

    def exogenous(self, obs_tags: tuple[str, ...] | list[str]) -> list[int]:
        """The observation columns that are setpoints of a track term (given by the plant,
        not moved by the actions): an off-policy rollout replays them as recorded."""
        return sorted({list(obs_tags).index(sp) for _, sp in self.track if isinstance(sp, str)})

    def bind(self, obs_tags: tuple[str, ...] | list[str]) -> RewardSpec:
        """Check every tag against ``obs_tags`` and resolve them to columns."""
        tags = list(obs_tags)
        for pv, sp in self.track:
            missing = [t for t in (pv, sp) if isinstance(t, str) and t not in tags]
            if missing:
                raise RewardError(f"reward track {pv}={sp}: {', '.join(missing)} is not an observation "
                                  f"(observations: {', '.join(tags)}); a setpoint that is not a tag is a number: "
                                  f"{pv}=VALUE")
            if isinstance(sp, float) and not math.isfinite(sp):
                raise RewardError(f"reward track {pv}={sp}: the setpoint must be a finite number or a tag")
        for pv, low, high in self.limits:
            if pv not in tags:
                raise RewardError(f"reward limit {pv}: not an observation (observations: {', '.join(tags)})")
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise RewardError(f"reward limit {pv}={low}:{high}: LOW and HIGH must be finite numbers, LOW < HIGH")
        for name, w in (("move", self.move), ("limit weight", self.limit_weight)):
            if not (math.isfinite(w) and w >= 0):
                raise RewardError(f"reward {name} {w}: must be a finite number ≥ 0")
        index = {"track": [(tags.index(pv), tags.index(sp) if isinstance(sp, str) else None,
                            0.0 if isinstance(sp, str) else float(sp)) for pv, sp in self.track],
                 "limits": [(tags.index(pv), low, high) for pv, low, high in self.limits]}
        return RewardSpec(self.track, self.move, self.limits, self.limit_weight, index)

    def __call__(self, next_obs: np.ndarray, action: np.ndarray, prev_action: np.ndarray,
                 span: np.ndarray) -> np.ndarray:
        """Rewards of a batch (rows: transitions; bound first with :meth:`bind`)."""
        idx = self._index
        if not idx and self.defined:
            raise RewardError("the reward is not bound to the observation tags (RewardSpec.bind)")
        r = np.zeros(next_obs.shape[0])
        for pv, sp, value in idx.get("track", ()):
            r -= np.abs(next_obs[:, pv] - (next_obs[:, sp] if sp is not None else value))
        if self.move:
            r -= self.move * (np.abs(action - prev_action) / np.where(span > 0, span, 1.0)).sum(axis=1)
        for pv, low, high in idx.get("limits", ()):
            x = next_obs[:, pv]
            r -= self.limit_weight * np.maximum(0.0, np.maximum(x - high, low - x))
        return r

    def to_dict(self) -> dict[str, Any]:
        return {"track": [[pv, sp] for pv, sp in self.track], "move": self.move,
                "limits": [[pv, low, high] for pv, low, high in self.limits], "limit_weight": self.limit_weight}

    @classmethod
    def from_dict(cls, d: Any) -> RewardSpec:
        """The stored form (a dataset's ``extra.reward_spec``); RewardError when it is not one."""
        try:
            track = tuple((str(pv), sp if isinstance(sp, str) else float(sp)) for pv, sp in d.get("track", []))
            limits = tuple((str(pv), float(low), float(high)) for pv, low, high in d.get("limits", []))
            return cls(track, float(d.get("move", 0.0)), limits, float(d.get("limit_weight", 1.0)))
        except (AttributeError, TypeError, ValueError) as e:
            raise RewardError(f"not a reward specification ({e})") from None

    def describe(self) -> str:
        terms = [f"-|{pv} - {sp}|" for pv, sp in self.track]
        if self.move:
            terms.append(f"-{self.move:g}·Σ|Δa|/span")
        terms += [f"-{self.limit_weight:g}·beyond({pv}, {low:g}..{high:g})" for pv, low, high in self.limits]
        return " ".join(terms) if terms else "none"
