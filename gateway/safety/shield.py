"""The action shield: nothing reaches the plant that is not finite, bounded and rate-limited.

Order: non-finite → rejected (nothing written); clip to [min, max]; limit the change per
cycle to ``max_rate * dt`` around the last written value; clip to bounds again so bounds
always win (they can only conflict when the last value itself lay outside the bounds,
e.g. a PLC setpoint read at start-up). Every intervention is counted per action.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gateway.config import Settings


@dataclass
class ShieldResult:
    ok: bool = True
    clipped: int = 0
    rate_limited: int = 0
    code: str = "ok"


class ActionShield:
    def __init__(self, settings: Settings) -> None:
        names = list(settings.policy.actions)
        specs = [settings.safety.actions[n] for n in names]
        self.names = names
        self.lo = np.array([a.min for a in specs])
        self.hi = np.array([a.max for a in specs])
        self.rate = np.array([a.max_rate if a.max_rate is not None else np.inf for a in specs])
        self.safe = np.array([a.safe for a in specs])
        self.interventions = np.zeros(len(names), dtype=np.int64)
        n = len(names)
        self._step, self._low, self._high, self._before = (np.zeros(n) for _ in range(4))
        self._mask = np.zeros(len(names), dtype=bool)
        self.result = ShieldResult()

    def apply(self, proposed: np.ndarray, last: np.ndarray, dt: float, out: np.ndarray) -> ShieldResult:
        """Write the shielded action into ``out``; ``result.ok`` False means write nothing.

        ``last`` is the last value written (finite, inside the bounds); ``dt`` the cycle period.
        """
        res = self.result
        res.ok, res.clipped, res.rate_limited, res.code = True, 0, 0, "ok"
        if not np.isfinite(proposed).all():
            i = int(np.flatnonzero(~np.isfinite(proposed))[0])
            res.ok, res.code = False, f"nonfinite_action:{self.names[i]}"
            return res
        np.clip(proposed, self.lo, self.hi, out=out)
        np.not_equal(out, proposed, out=self._mask)
        res.clipped = int(self._mask.sum())
        np.copyto(self._before, out)
        np.multiply(self.rate, dt, out=self._step)
        np.subtract(last, self._step, out=self._low)
        np.add(last, self._step, out=self._high)
        np.clip(out, self._low, self._high, out=out)
        np.clip(out, self.lo, self.hi, out=out)
        np.not_equal(out, self._before, out=self._mask)
        res.rate_limited = int(self._mask.sum())
        if res.clipped or res.rate_limited:
            np.not_equal(out, proposed, out=self._mask)
            self.interventions += self._mask
            res.code = "clipped" if res.clipped else "rate_limited"
        return res
