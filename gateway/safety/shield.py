"""The action shield: nothing reaches the plant that is not finite, bounded, rate-limited
and allowed by every active interlock — or nothing is written at all.

Order: non-finite → rejected; clip to the effective bounds (configured [min, max]
tightened by the active interlocks); limit the change per cycle to ``max_rate * dt``
around the last written value. When the rate window and the bounds do not overlap (an
interlock demands a jump larger than the rate limit allows, or the last value lies
outside the bounds), no action satisfies every rule: the result is refused with
``interlock_conflict:<action>`` and the caller trips to the safe state, which the config
check guarantees every interlock allows. Every intervention is counted per action.
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
        n = len(names)
        self.names = names
        self.lo = np.array([a.min for a in specs])
        self.hi = np.array([a.max for a in specs])
        # "no limit" is the largest finite double, not inf: inf·0 would be NaN for dt = 0
        big = np.finfo(float).max
        self.rate = np.array([a.max_rate if a.max_rate is not None else big for a in specs])
        self.safe = np.array([a.safe for a in specs])
        self.interventions = np.zeros(n, dtype=np.int64)
        self._low, self._high, self._before = (np.zeros(n) for _ in range(3))
        self._mask = np.zeros(n, dtype=bool)
        self._n = n
        self.result = ShieldResult()

    def apply(self, proposed: np.ndarray, last: np.ndarray, dt: float, out: np.ndarray,
              lo: np.ndarray | None = None, hi: np.ndarray | None = None) -> ShieldResult:
        """Write the shielded action into ``out``; ``result.ok`` False means write nothing.

        ``last`` is the last value written (finite); ``dt`` the cycle period; ``lo``/``hi``
        the effective bounds (default: the configured ones).
        """
        lo = self.lo if lo is None else lo
        hi = self.hi if hi is None else hi
        res = self.result
        res.ok, res.clipped, res.rate_limited, res.code = True, 0, 0, "ok"
        np.isfinite(proposed, out=self._mask)
        if np.count_nonzero(self._mask) != self._n:
            i = int(np.flatnonzero(~self._mask)[0])
            res.ok, res.code = False, f"nonfinite_action:{self.names[i]}"
            return res
        # the rate window, intersected with the bounds
        np.multiply(self.rate, dt, out=self._low)
        np.add(last, self._low, out=self._high)
        np.subtract(last, self._low, out=self._low)
        np.maximum(self._low, lo, out=self._low)
        np.minimum(self._high, hi, out=self._high)
        np.greater(self._low, self._high, out=self._mask)
        if np.count_nonzero(self._mask):
            i = int(np.flatnonzero(self._mask)[0])
            res.ok, res.code = False, f"interlock_conflict:{self.names[i]}"
            return res
        # np.minimum/np.maximum: the same as np.clip here (lo <= hi), at a fraction of its cost
        np.maximum(proposed, lo, out=out)
        np.minimum(out, hi, out=out)
        np.not_equal(out, proposed, out=self._mask)
        res.clipped = np.count_nonzero(self._mask)
        np.copyto(self._before, out)
        np.maximum(out, self._low, out=out)
        np.minimum(out, self._high, out=out)
        np.not_equal(out, self._before, out=self._mask)
        res.rate_limited = np.count_nonzero(self._mask)
        if res.clipped or res.rate_limited:
            np.not_equal(out, proposed, out=self._mask)
            self.interventions += self._mask
            res.code = "clipped" if res.clipped else "rate_limited"
        return res
