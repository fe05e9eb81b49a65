"""The interlock expression language: a fixed grammar, parsed, never evaluated with eval.

    condition := clause ( "and" clause )*
    clause    := TAG OP NUMBER               OP ∈ {<, <=, >, >=}
    restrict  := ACTION ( "<=" | ">=" ) NUMBER

``when = "level >= 0.95 and pump_on >= 1"``, ``then = "inflow_sp <= 0"``: while every
clause of ``when`` holds, the action's upper (or lower) bound becomes the number.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

OPS = ("<=", ">=", "<", ">")
_NAME = r"[A-Za-z_][A-Za-z0-9_.]*"
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_CLAUSE = re.compile(rf"^\s*({_NAME})\s*(<=|>=|<|>)\s*({_NUMBER})\s*$")


@dataclass(frozen=True)
class Clause:
    tag: str
    op: str
    value: float

    def holds(self, x: float) -> bool:
        """Reference semantics (the compiled checker must agree); NaN never holds."""
        if self.op == "<":
            return x < self.value
        if self.op == "<=":
            return x <= self.value
        if self.op == ">":
            return x > self.value
        return x >= self.value


def parse_clause(text: str) -> Clause:
    m = _CLAUSE.match(text)
    if m is None:
        raise ValueError(f"cannot parse {text.strip()!r}: expected TAG OP NUMBER with OP one of "
                         f"{', '.join(OPS)}")
    value = float(m.group(3))
    if not math.isfinite(value):
        raise ValueError(f"{text.strip()!r}: the number must be finite")
    return Clause(m.group(1), m.group(2), value)


def parse_condition(text: str) -> tuple[Clause, ...]:
    parts = re.split(r"\s+and\s+", text.strip())
    if not text.strip():
        raise ValueError("empty condition")
    return tuple(parse_clause(p) for p in parts)


def parse_restriction(text: str) -> Clause:
    clause = parse_clause(text)
    if clause.op not in ("<=", ">="):
        raise ValueError(f"{text.strip()!r}: a restriction bounds an action with <= or >=")
    return clause
