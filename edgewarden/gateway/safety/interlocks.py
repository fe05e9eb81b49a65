"""Interlocks compiled into arrays: which action bounds tighten, given this cycle's readings.

Each interlock is ``when`` (clauses on monitored tags, all must hold) → ``then`` (an
action's upper or lower bound becomes a number). ``bounds`` starts from the configured
[min, max] and applies every active interlock, so the shield always works on one pair of
arrays. A NaN reading never satisfies a clause, but NaN never gets here: the checker
trips on it first. The compiled kernel (edgewarden/gateway/safety/backend.py) does the same on the
same arrays; the Python below is the fallback.
"""

from __future__ import annotations

import numpy as np

from edgewarden.gateway.config import Settings
from edgewarden.gateway.safety import backend as backends
from edgewarden.gateway.safety.expr import parse_condition, parse_restriction


class Interlocks:
    def __init__(self, settings: Settings, monitored: list[str], backend: str | None = None) -> None:
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
        codes = {"<": 0, "<=": 1, ">": 2, ">=": 3}
        self._clauses = [(codes[o], v, k) for o, v, k in zip(ops, values, owner)]
        self._holds = [True] * len(self.names)
        self.lo = self.base_lo.copy()
        self.hi = self.base_hi.copy()
        self.active = np.zeros(self.n, dtype=bool)
        self._lohi = (self.lo, self.hi)
        kernel = backends.choose(backend)
        self.backend = backends.name(kernel)
        self._kernel_bounds = None if kernel is None else kernel.Interlocks(
            base_lo=self.base_lo, base_hi=self.base_hi, lo=self.lo, hi=self.hi, active=self.active,
            action=np.array(self.act_index, dtype=np.intp), upper=np.array(self.is_upper, dtype=bool),
            limit=np.array(self.limit, dtype=float), clause_slot=self._slots,
            clause_op=np.array([c[0] for c in self._clauses], dtype=np.uint8),
            clause_value=np.array([c[1] for c in self._clauses], dtype=float),
            clause_owner=np.array([c[2] for c in self._clauses], dtype=np.intp)).bounds

    def bounds(self, monitored_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Effective [lo, hi] per action for this cycle (arrays reused between calls)."""
        if self._kernel_bounds is not None:
            self._kernel_bounds(monitored_values)
            return self._lohi
        np.copyto(self.lo, self.base_lo)
        np.copyto(self.hi, self.base_hi)
        if self.n == 0:
            return self.lo, self.hi
        # a handful of clauses: plain Python on one list beats a dozen numpy calls
        x = monitored_values.take(self._slots).tolist()
        holds = self._holds
        for k in range(self.n):
            holds[k] = True
        for c, (op, value, owner) in enumerate(self._clauses):
            xc = x[c]
            if not (xc < value if op == 0 else xc <= value if op == 1 else xc > value if op == 2 else xc >= value):
                holds[owner] = False
        self.active[:] = holds
        for k in range(self.n):
            if holds[k]:
                j = self.act_index[k]
                if self.is_upper[k]:
                    if self.limit[k] < self.hi[j]:
                        self.hi[j] = self.limit[k]
                elif self.limit[k] > self.lo[j]:
                    self.lo[j] = self.limit[k]
        return self.lo, self.hi

    def active_names(self) -> list[str]:
        return [self.names[k] for k in np.flatnonzero(self.active)]
