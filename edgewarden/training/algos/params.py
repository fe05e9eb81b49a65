"""Typed, range-checked hyperparameters: every algorithm's config is a pydantic dataclass
of these, so ``--set`` values are checked when the config is made (before any process is
spawned or file written), unknown keys are named with the valid ones, and a value of the
wrong type is refused in words, not by torch at the first step."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from pydantic import ConfigDict, Field, ValidationError

CHECKED = ConfigDict(extra="forbid")
Width = Annotated[int, Field(ge=1, le=65_536)]
Hidden = Annotated[tuple[Width, ...], Field(min_length=1, max_length=16)]
LearningRate = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
BatchSize = Annotated[int, Field(ge=1, le=1_000_000)]
Discount = Annotated[float, Field(ge=0, le=1)]
Polyak = Annotated[float, Field(gt=0, le=1)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(gt=0, lt=1)]
Count = Annotated[int, Field(ge=1, le=1_000_000)]
Steps = Annotated[int, Field(ge=0, le=1_000_000_000)]


def config_problems(algo: str, cfg_cls: type, exc: ValidationError) -> str:
    """One line per problem, in --set's terms, and the keys the algorithm has."""
    valid = ", ".join(f.name for f in dataclasses.fields(cfg_cls))
    lines = []
    for e in exc.errors():
        key = ".".join(str(p) for p in e["loc"]) or "config"
        if e["type"] == "unexpected_keyword_argument":
            lines.append(f"{key}: {algo} has no such setting")
        else:
            got: Any = e.get("input")
            lines.append(f"{key}: {e['msg']} (got {got!r})")
    return f"--set for {algo}: " + "; ".join(lines) + f" (its settings: {valid})"
