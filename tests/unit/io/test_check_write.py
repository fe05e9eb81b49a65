"""The write check below the shield: its fast path (plain float bounds per plan) refuses
exactly what the per-tag reading of the config refuses, with the same message."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgewarden.gateway.config import TagSpec
from edgewarden.gateway.errors import TransportError
from edgewarden.gateway.io.transport import WritePlan, check_write


def reference(plan: WritePlan, values: list[float]) -> str | None:
    """The check as it reads the config, tag by tag: the message it refuses with, or None."""
    for name, spec, v in zip(plan.names, plan.specs, values, strict=True):
        if not math.isfinite(v):
            return f"refused write of {v!r} to tag {name!r}: not a finite number"
        if spec.range is not None and not spec.range[0] <= v <= spec.range[1]:
            return f"refused write of {v} to tag {name!r}: outside its valid range {list(spec.range)}"
    return None


bounds = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
ranges = st.one_of(st.none(), st.tuples(bounds, bounds).map(sorted).map(tuple))
values = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(min_value=-2e6, max_value=2e6),
                   st.integers(min_value=-10**6, max_value=10**6))


@given(st.lists(st.tuples(ranges, values), min_size=1, max_size=6))
def test_fast_check_refuses_what_the_per_tag_check_refuses(tags: list[tuple[tuple[float, float] | None, float]]) -> None:
    specs = tuple(TagSpec(connection="c", node=f"ns=2;s=t{i}", writable=True, range=r)  # type: ignore[arg-type]
                  for i, (r, _) in enumerate(tags))
    plan = WritePlan(names=tuple(f"t{i}" for i in range(len(tags))), specs=specs)
    vals = [v for _, v in tags]
    expected = reference(plan, vals)
    if expected is None:
        check_write(plan, vals)
    else:
        with pytest.raises(TransportError) as info:
            check_write(plan, vals)
        assert str(info.value) == expected


def test_a_count_mismatch_is_refused() -> None:
    plan = WritePlan(names=("a",), specs=(TagSpec(connection="c", node="ns=2;s=a", writable=True),))
    with pytest.raises(TransportError, match="write of 2 values to 1 tags"):
        check_write(plan, [1.0, 2.0])
