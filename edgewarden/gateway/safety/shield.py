"""The action shield: nothing reaches the plant that is not finite, bounded, rate-limited
and allowed by every active interlock — or nothing is written at all.

Order: non-finite → rejected; clip to the effective bounds (configured [min, max]
tightened by the active interlocks); limit the change per cycle to ``max_rate * dt``
around the last written value. When the rate window and the bounds do not overlap (an
interlock demands a jump larger than the rate limit allows, or the last value lies
outside the bounds), no action satisfies every rule: the result is refused with
``interlock_conflict:<action>`` and the caller trips to the safe state, which the config
check guarantees every interlock allows. Every intervention is counted per action.

The arithmetic runs in the compiled kernel (edgewarden/gateway/safety/_kernel.c) or, where it was
not built, in the numpy code below (edgewarden/gateway/safety/backend.py chooses); both return 0
(nothing changed), ``clipped << 32 | rate_limited``, or a refusal
``-(1 + 2 * index + conflict)`` with ``out`` untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgewarden.gateway.config import Settings
from edgewarden.gateway.safety import backend as backends

_COUNT_BITS = 32


@dataclass
class ShieldResult:
    ok: bool = True
    clipped: int = 0
    rate_limited: int = 0
    code: str = "ok"


class ActionShield:
    def __init__(self, settings: Settings, backend: str | None = None) -> None:
        names = list(settings.policy.actions)
        specs = [settings.safety.actions[n] for n in names]
        n = len(names)
        self.names = names
        self.lo = np.array([a.min for a in specs])
        self.hi = np.array([a.max for a in specs])
        # no max_rate: an infinite step whatever dt (never inf·dt, which is NaN for dt = 0),
        # so the window is the bounds themselves however far the last value lies
        self.rate = np.array([a.max_rate if a.max_rate is not None else np.inf for a in specs])
        self._limited = np.isfinite(self.rate)
        self._step = np.full(n, np.inf)
        self.safe = np.array([a.safe for a in specs])
        self.interventions = np.zeros(n, dtype=np.int64)
        self._low, self._high, self._before = (np.zeros(n) for _ in range(3))
        self._mask = np.zeros(n, dtype=bool)
        self._n = n
        self.result = ShieldResult()
        self._refusals = ([f"nonfinite_action:{a}" for a in names], [f"interlock_conflict:{a}" for a in names])
        kernel = backends.choose(backend)
        self.backend = backends.name(kernel)
        self._run = self._apply_numpy if kernel is None else kernel.Shield(
            rate=self.rate, interventions=self.interventions, low=self._low, high=self._high).apply

    def apply(self, proposed: np.ndarray, last: np.ndarray, dt: float, out: np.ndarray,
              lo: np.ndarray | None = None, hi: np.ndarray | None = None) -> ShieldResult:
        """Write the shielded action into ``out``; ``result.ok`` False means write nothing.

        ``last`` is the last value written (finite); ``dt`` the cycle period; ``lo``/``hi``
        the effective bounds (default: the configured ones).
        """
        r = self._run(proposed, last, dt, out, self.lo if lo is None else lo, self.hi if hi is None else hi)
        res = self.result
        if r == 0:
            res.ok, res.clipped, res.rate_limited, res.code = True, 0, 0, "ok"
        elif r > 0:
            res.ok, res.clipped, res.rate_limited = True, r >> _COUNT_BITS, r & ((1 << _COUNT_BITS) - 1)
            res.code = "clipped" if res.clipped else "rate_limited"
        else:
            k = -r - 1
            res.ok, res.clipped, res.rate_limited, res.code = False, 0, 0, self._refusals[k & 1][k >> 1]
        return res

    def _apply_numpy(self, proposed: np.ndarray, last: np.ndarray, dt: float, out: np.ndarray,
                     lo: np.ndarray, hi: np.ndarray) -> int:
        np.isfinite(proposed, out=self._mask)
        if np.count_nonzero(self._mask) != self._n:
            return -1 - 2 * int(np.flatnonzero(~self._mask)[0])
        # the rate window, intersected with the bounds
        np.multiply(self.rate, dt, out=self._step, where=self._limited)
        np.add(last, self._step, out=self._high)
        np.subtract(last, self._step, out=self._low)
        np.maximum(self._low, lo, out=self._low)
        np.minimum(self._high, hi, out=self._high)
        np.greater(self._low, self._high, out=self._mask)
        if np.count_nonzero(self._mask):
            return -2 - 2 * int(np.flatnonzero(self._mask)[0])
        # np.minimum/np.maximum: the same as np.clip here (lo <= hi), at a fraction of its cost
        np.maximum(proposed, lo, out=out)
        np.minimum(out, hi, out=out)
        np.not_equal(out, proposed, out=self._mask)
        clipped = np.count_nonzero(self._mask)
        np.copyto(self._before, out)
        np.maximum(out, self._low, out=out)
        np.minimum(out, self._high, out=out)
        np.not_equal(out, self._before, out=self._mask)
        rate_limited = np.count_nonzero(self._mask)
        if clipped or rate_limited:
            np.not_equal(out, proposed, out=self._mask)
            self.interventions += self._mask
        return clipped << _COUNT_BITS | rate_limited
