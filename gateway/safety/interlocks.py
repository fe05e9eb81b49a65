"""Interlocks compiled into arrays: which action bounds tighten, given this cycle's readings.

Each interlock is ``when`` (clauses on monitored tags, all must hold) → ``then`` (an
action's upper or lower bound becomes a number). ``bounds`` starts from the configured
[min, max] and applies every active interlock, so the shield always works on one pair of
arrays. A NaN reading never satisfies a clause, but NaN never gets here: the checker
trips on it first.
"""

from __future__ import annotations

import numpy as np

from gateway.config import Settings
from gateway.safety.expr import parse_condition, parse_restriction


class Interlocks:
    def __init__(self, settings: Settings, monitored: list[str]) -> None:
        actions = list(settings.policy.actions)
        specs = [settings.safety.actions[a] for a in actions]
        self.base_lo = np.array([a.min for a in specs])
        self.base_hi = np.array([a.max for a in specs])
        self.names: list[str] = []
        slots, ops, values, owner = [], [], [], []
        self.act_index: list[int] = []
        self.is_upper: list[bool] = []
        self.limit: list[float] = []
        for k, (name, il) in enumerate(settings.safety.interlocks.items()):
            self.names.append(name)
            for clause in parse_condition(il.when):
                slots.append(monitored.index(clause.tag))
                ops.append(clause.op)
                values.append(clause.value)
                owner.append(k)
            r = parse_restriction(il.then)
            self.act_index.append(actions.index(r.tag))
            self.is_upper.append(r.op == "<=")
            self.limit.append(r.value)
        self.n = len(self.names)
        self._slots = np.array(slots, dtype=np.intp)
        ops_arr = np.array(ops, dtype=object)
        self._lt, self._le = ops_arr == "<", ops_arr == "<="
        self._gt, self._ge = ops_arr == ">", ops_arr == ">="
        self._values = np.array(values, dtype=float)
        self._owner = np.array(owner, dtype=np.intp)
        self.lo = self.base_lo.copy()
        self.hi = self.base_hi.copy()
        self.active = np.zeros(self.n, dtype=bool)

    def bounds(self, monitored_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Effective [lo, hi] per action for this cycle (arrays reused between calls)."""
        self.lo[:] = self.base_lo
        self.hi[:] = self.base_hi
        if self.n == 0:
            return self.lo, self.hi
        x = monitored_values[self._slots]
        holds = ((self._lt & (x < self._values)) | (self._le & (x <= self._values))
                 | (self._gt & (x > self._values)) | (self._ge & (x >= self._values)))
        # an interlock is active when none of its clauses fails
        failed = np.zeros(self.n, dtype=bool)
        failed[self._owner[~holds]] = True
        np.logical_not(failed, out=self.active)
        for k in np.flatnonzero(self.active):
            j = self.act_index[k]
            if self.is_upper[k]:
                self.hi[j] = min(self.hi[j], self.limit[k])
            else:
                self.lo[j] = max(self.lo[j], self.limit[k])
        return self.lo, self.hi

    def active_names(self) -> list[str]:
        return [self.names[k] for k in np.flatnonzero(self.active)]
