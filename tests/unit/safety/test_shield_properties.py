"""Property tests: the compiled interlocks + action shield against a plain reference.

For any generated configuration (1–16 actions with random bounds, rates and safe values,
random interlocks over 1–16 observations), any readings and any proposed action (NaN,
±inf, exact bounds, huge values included), the shield either refuses (``ok`` False:
nothing is written, the cycle trips) or writes an action that is finite, inside every
configured bound, inside every active interlock, and within ``max_rate * dt`` of the last
written value. And it does exactly what the reference below does: same ok, same code,
same counts, same output: with the compiled kernel and with the numpy fallback alike; and
the kernel leaves the same bounds, output and counts behind as the numpy code, to the bit.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from edgewarden.gateway.config import Settings
from edgewarden.gateway.safety.checker import monitored_tags
from edgewarden.gateway.safety.expr import parse_condition, parse_restriction
from edgewarden.gateway.safety.interlocks import Interlocks
from edgewarden.gateway.safety.shield import ActionShield
from tests.unit.safety.backends import assert_same_bits, each_backend, same_bits
from tests.unit.safety.strategies import SPECIALS, Plant, finite, plants, readings

# EDGEWARDEN_HYPOTHESIS_EXAMPLES=5000 for a long hunt; the default keeps the file under ~10 s
EXAMPLES = int(os.environ.get("EDGEWARDEN_HYPOTHESIS_EXAMPLES", "100"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SMALL = settings(PROPERTY, max_examples=max(EXAMPLES // 4, 10))


# ---- the reference: loops and ifs, straight from the spec ---------------------------------
@dataclass
class RefBounds:
    lo: list[float]
    hi: list[float]
    active: list[str]
    restrictions: list[tuple[int, str, float]]  # (action index, "<=" or ">=", limit) of active interlocks


def ref_bounds(s: Settings, readings_by_tag: dict[str, float]) -> RefBounds:
    actions = list(s.policy.actions)
    lo = [s.safety.actions[a].min for a in actions]
    hi = [s.safety.actions[a].max for a in actions]
    active, restrictions = [], []
    for name, il in s.safety.interlocks.items():
        holds = True
        for clause in parse_condition(il.when):
            if not clause.holds(readings_by_tag[clause.tag]):
                holds = False
        if not holds:
            continue
        r = parse_restriction(il.then)
        j = actions.index(r.tag)
        if r.op == "<=":
            hi[j] = min(hi[j], r.value)
        else:
            lo[j] = max(lo[j], r.value)
        active.append(name)
        restrictions.append((j, r.op, r.value))
    return RefBounds(lo, hi, active, restrictions)


@dataclass
class RefResult:
    ok: bool
    code: str
    clipped: int = 0
    rate_limited: int = 0
    out: list[float] | None = None


def ref_shield(s: Settings, proposed: list[float], last: list[float], dt: float,
               lo: list[float], hi: list[float]) -> RefResult:
    names = list(s.policy.actions)
    rates = [s.safety.actions[a].max_rate for a in names]
    n = len(names)
    for i in range(n):
        if not math.isfinite(proposed[i]):
            return RefResult(False, f"nonfinite_action:{names[i]}")
    windows = []
    for i in range(n):
        low, high = lo[i], hi[i]
        if rates[i] is not None:
            step = rates[i] * dt
            low = max(low, last[i] - step)
            high = min(high, last[i] + step)
        if low > high:
            return RefResult(False, f"interlock_conflict:{names[i]}")
        windows.append((low, high))
    out, clipped, rate_limited = [], 0, 0
    for i in range(n):
        x = proposed[i]
        bounded = x
        if bounded < lo[i]:
            bounded = lo[i]
        if bounded > hi[i]:
            bounded = hi[i]
        if bounded != x:
            clipped += 1
        low, high = windows[i]
        y = bounded
        if y < low:
            y = low
        if y > high:
            y = high
        if y != bounded:
            rate_limited += 1
        out.append(y)
    code = "clipped" if clipped else "rate_limited" if rate_limited else "ok"
    return RefResult(True, code, clipped, rate_limited, out)


# ---- generated inputs ----------------------------------------------------------------------
def actions_near(plant: Plant, last: list[float], dt: float, wild: bool = True) -> st.SearchStrategy[list[float]]:
    """Proposals at the bounds, at the edges of the rate window, anywhere finite, and
    (``wild``) NaN, ±inf and huge values."""
    s = plant.settings
    per_action = []
    for i, name in enumerate(plant.actions):
        spec = s.safety.actions[name]
        candidates = [spec.min, spec.max, spec.safe, last[i]]
        if spec.max_rate is not None:
            candidates += [last[i] + spec.max_rate * dt, last[i] - spec.max_rate * dt]
        span = spec.max - spec.min
        near = st.floats(spec.min - span - 1.0, spec.max + span + 1.0, allow_nan=False, allow_infinity=False)
        per_action.append(st.one_of(st.sampled_from(candidates), near, *([readings(plant)] if wild else [])))
    return st.tuples(*per_action).map(list)


def last_values(plant: Plant, lo: list[float] | None = None, hi: list[float] | None = None,
                wild: bool = True) -> st.SearchStrategy[list[float]]:
    """The last written action: inside this cycle's bounds (as after a cycle without a new
    interlock), inside the configured ones, at a bound or, ``wild``, any finite number."""
    s = plant.settings
    per_action = []
    for i, name in enumerate(plant.actions):
        spec = s.safety.actions[name]
        a, b = (lo[i], hi[i]) if lo is not None and hi is not None and lo[i] <= hi[i] else (spec.min, spec.max)
        choices = [st.floats(a, b) if a < b else st.just(a), st.sampled_from([spec.min, spec.max, spec.safe])]
        if wild:
            choices.append(finite)
        per_action.append(st.one_of(*choices))
    return st.tuples(*per_action).map(list)


dts = st.one_of(st.sampled_from([0.001, 0.01, 0.05, 0.1, 1.0]),
                st.floats(min_value=1e-6, max_value=10.0, allow_nan=False))


def _close(a: float, b: float) -> bool:
    return a == b or abs(a - b) <= 1e-12 * max(1.0, abs(a), abs(b))


def _rate_ok(out: float, last: float, rate: float, dt: float) -> bool:
    # |out - last| <= rate*dt, with a tolerance of a few ulps of the numbers involved
    tol = 4 * math.ulp(max(abs(out), abs(last), rate * dt))
    return abs(out - last) <= rate * dt + tol


# ---- the properties ------------------------------------------------------------------------
@each_backend
@PROPERTY
@given(plant=plants(), data=st.data())
def test_shield_is_safe_and_matches_the_reference(backend: str, plant: Plant, data: st.DataObject) -> None:
    s = plant.settings
    names = list(dict.fromkeys(monitored_tags(s)))
    interlocks = Interlocks(s, names, backend)
    shield = ActionShield(s, backend)
    twins = (Interlocks(s, names, "numpy"), ActionShield(s, "numpy")) if backend == "c" else None
    out = np.zeros(len(plant.actions))
    # several cycles on the same compiled objects: their reused buffers must not leak state
    for _ in range(data.draw(st.integers(1, 3), label="cycles")):
        mv = data.draw(st.tuples(*(readings(plant) for _ in names)).map(list), label="monitored")
        by_tag = dict(zip(names, mv, strict=True))
        ref_b = ref_bounds(s, by_tag)
        lo, hi = interlocks.bounds(np.array(mv))
        if twins is not None:
            twins[0].bounds(np.array(mv))
            assert_same_bits(interlocks, twins[0], ("lo", "hi", "active"), "bounds")
        assert lo.tolist() == ref_b.lo and hi.tolist() == ref_b.hi
        assert interlocks.active_names() == ref_b.active

        dt = data.draw(dts, label="dt")
        wild = data.draw(st.integers(0, 3), label="wild") == 0
        last = data.draw(last_values(plant, ref_b.lo, ref_b.hi, wild), label="last")
        proposed = data.draw(actions_near(plant, last, dt, wild), label="proposed")
        out[:] = -12345.0
        # last ± max_rate·dt may overflow to ±inf for extreme (finite) values; that is the
        # right window, and numpy's overflow warning (an error under pytest) is not a fault
        with np.errstate(over="ignore"):
            res = shield.apply(np.array(proposed), np.array(last), dt, out, lo, hi)
            if twins is not None:
                twin_out = np.full_like(out, -12345.0)
                assert twins[1].apply(np.array(proposed), np.array(last), dt, twin_out, lo, hi) == res
                assert same_bits(out, twin_out), (out, twin_out)
                assert_same_bits(shield, twins[1], ("interventions",), "interventions")
        ref = ref_shield(s, proposed, last, dt, ref_b.lo, ref_b.hi)

        assert (res.ok, res.code) == (ref.ok, ref.code)
        event(f"shield: {res.code.split(':')[0]}")
        if ref_b.active:
            event("an interlock active")
        if not res.ok:
            # refused: the reason is real
            kind, _, action = res.code.partition(":")
            i = plant.actions.index(action)
            if kind == "nonfinite_action":
                assert not math.isfinite(proposed[i])
            else:
                assert kind == "interlock_conflict"
                rate = s.safety.actions[action].max_rate
                step = math.inf if rate is None else rate * dt
                assert max(ref_b.lo[i], last[i] - step) > min(ref_b.hi[i], last[i] + step)
            continue
        assert (res.clipped, res.rate_limited) == (ref.clipped, ref.rate_limited)
        assert ref.out is not None
        for i, name in enumerate(plant.actions):
            spec = s.safety.actions[name]
            y = float(out[i])
            assert _close(y, ref.out[i]), (name, y, ref.out[i])
            assert math.isfinite(y)
            assert spec.min <= y <= spec.max, (name, y)
            if spec.max_rate is not None:
                assert _rate_ok(y, last[i], spec.max_rate, dt), (name, y, last[i], spec.max_rate, dt)
        for j, op, limit in ref_b.restrictions:
            y = float(out[j])
            assert (y <= limit) if op == "<=" else (y >= limit), (plant.actions[j], op, limit, y)


@each_backend
@SMALL
@given(plant=plants(max_interlocks=0), data=st.data())
def test_default_bounds_are_the_configured_ones(backend: str, plant: Plant, data: st.DataObject) -> None:
    """Without lo/hi (and without interlocks) the shield uses [min, max] from the config."""
    s = plant.settings
    shield = ActionShield(s, backend)
    dt = data.draw(dts)
    last = data.draw(last_values(plant))
    proposed = data.draw(actions_near(plant, last, dt))
    out = np.zeros(len(plant.actions))
    with np.errstate(over="ignore"):
        res = shield.apply(np.array(proposed), np.array(last), dt, out)
    lo = [s.safety.actions[a].min for a in plant.actions]
    hi = [s.safety.actions[a].max for a in plant.actions]
    ref = ref_shield(s, proposed, last, dt, lo, hi)
    assert (res.ok, res.code) == (ref.ok, ref.code)
    if res.ok:
        assert ref.out is not None and all(_close(a, b) for a, b in zip(out.tolist(), ref.out, strict=True))


@each_backend
@SMALL
@given(plant=plants(max_interlocks=0), data=st.data())
def test_any_non_finite_proposal_writes_nothing(backend: str, plant: Plant, data: st.DataObject) -> None:
    s = plant.settings
    shield = ActionShield(s, backend)
    last = data.draw(last_values(plant))
    proposed = data.draw(actions_near(plant, last, 0.1))
    k = data.draw(st.integers(0, len(proposed) - 1))
    proposed[k] = data.draw(st.sampled_from([x for x in SPECIALS if not math.isfinite(x)]))
    res = shield.apply(np.array(proposed), np.array(last), 0.1, np.zeros(len(proposed)))
    first = next(i for i, x in enumerate(proposed) if not math.isfinite(x))
    assert not res.ok and res.code == f"nonfinite_action:{plant.actions[first]}"
