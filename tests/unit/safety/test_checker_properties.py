"""Property tests: the compiled observation checker against a plain reference.

For any generated configuration (1–16 observations plus limit-only tags, random valid
ranges, staleness limits, hard/soft/rate limits, a PLC e-stop input, interlocks) and any
sequence of snapshots (values including NaN, ±inf, exact bounds and huge numbers; every
quality; timestamps that advance, stall or are missing; gateway clocks that advance by
anything from 0 to seconds), the compiled checker returns the same status and reason code
as the reference below, cycle after cycle (it is stateful: staleness and rate of change),
with the compiled kernel and with the numpy fallback alike; and the kernel leaves the same
verdict, message and state behind as the numpy code, to the bit.

The reference is the rule list of edgewarden/gateway/safety/checker.py written as loops and ifs:
quality (NO_DATA → HOLD, other non-GOOD → TRIP), valid value (NaN, ±inf or outside the
tag's range → TRIP), staleness (HOLD), rate of change (TRIP), PLC e-stop input (TRIP),
hard limits (TRIP, high/low), soft limits (OK with an alarm); within a rule, the first tag
in the monitored order is reported.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from edgewarden.gateway.config import Settings
from edgewarden.gateway.io.tags import Quality, Snapshot, TagMap
from edgewarden.gateway.safety.checker import ObservationChecker, Status
from edgewarden.gateway.safety.expr import parse_condition
from tests.unit.safety.backends import CHECKER_STATE, assert_same_bits, each_backend
from tests.unit.safety.strategies import Plant, plants, plausible, readings

EXAMPLES = int(os.environ.get("EDGEWARDEN_HYPOTHESIS_EXAMPLES", "100"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SMALL = settings(PROPERTY, max_examples=max(EXAMPLES // 4, 10))


# ---- the reference ------------------------------------------------------------------------
def ref_monitored(s: Settings) -> list[str]:
    names: list[str] = []

    def add(name: str | None) -> None:
        if name and name not in names:
            names.append(name)

    for name in s.policy.observations:
        add(name)
    for name in s.safety.limits:
        add(name)
    add(s.safety.estop_input)
    add(s.safety.hand_auto_tag)
    add(s.safety.plc_remote_tag)
    add(s.safety.plc_watchdog_tag)
    for il in s.safety.interlocks.values():
        for clause in parse_condition(il.when):
            add(clause.tag)
    for pid in s.safety.fallback.pid.values():
        add(pid.pv)
        if isinstance(pid.setpoint, str):
            add(pid.setpoint)
    return names


@dataclass
class RefVerdict:
    status: Status
    code: str


class RefChecker:
    def __init__(self, s: Settings) -> None:
        self.s = s
        self.names = ref_monitored(s)
        self.last_value: dict[str, float | None] = {n: None for n in self.names}
        self.last_change: dict[str, float] = {}
        self.prev: dict[str, float] | None = None
        self.prev_t: float | None = None
        self.soft_alarms = 0

    def check(self, values: dict[str, float], quality: dict[str, Quality], recv: dict[str, float],
              now: float) -> RefVerdict:
        s = self.s
        # a value that differs from the last one seen is a change (NaN equals nothing)
        for n in self.names:
            if self.last_value[n] is None or not values[n] == self.last_value[n]:
                self.last_value[n] = values[n]
                self.last_change[n] = now
        for n in self.names:
            if quality[n] == Quality.NO_DATA:
                return RefVerdict(Status.HOLD, f"no_data:{n}")
            if quality[n] != Quality.GOOD:
                return RefVerdict(Status.TRIP, f"bad_quality:{n}")
        for n in self.names:
            v = values[n]
            rng = s.tags[n].range
            if not math.isfinite(v):
                return RefVerdict(Status.TRIP, f"bad_value:{n}")
            if rng is not None and not (rng[0] <= v <= rng[1]):
                return RefVerdict(Status.TRIP, f"bad_value:{n}")
        for n in self.names:  # fresh: received from the link within stale_ms (or the max data age)
            stale_ms = s.tags[n].stale_ms
            limit = (stale_ms if stale_ms is not None else s.gateway.data_age_limit_ms) / 1000.0
            if now - recv[n] > limit:
                return RefVerdict(Status.HOLD, f"stale:{n}")
        for n in self.names:
            freeze_s = s.tags[n].freeze_s
            if freeze_s is not None and now - self.last_change[n] > freeze_s:
                return RefVerdict(Status.HOLD, f"frozen:{n}")
        prev, prev_t = self.prev, self.prev_t
        self.prev, self.prev_t = dict(values), now
        if prev is not None and prev_t is not None and now - prev_t > 0:
            dt = now - prev_t
            for n in self.names:
                lim = s.safety.limits.get(n)
                if lim is not None and lim.max_rate is not None:
                    if abs(values[n] - prev[n]) > lim.max_rate * dt:
                        return RefVerdict(Status.TRIP, f"rate_of_change:{n}")
        if s.safety.estop_input is not None and values[s.safety.estop_input] != 0.0:
            return RefVerdict(Status.TRIP, "plc_estop")
        for n in self.names:
            lim = s.safety.limits.get(n)
            if lim is not None and lim.hard is not None:
                lo, hi = lim.hard
                if values[n] > hi:
                    return RefVerdict(Status.TRIP, f"hard_limit:{n}:high")
                if values[n] < lo:
                    return RefVerdict(Status.TRIP, f"hard_limit:{n}:low")
        for n in self.names:
            lim = s.safety.limits.get(n)
            if lim is not None and lim.soft is not None and not (lim.soft[0] <= values[n] <= lim.soft[1]):
                self.soft_alarms += 1
                return RefVerdict(Status.OK, f"soft_limit:{n}")
        return RefVerdict(Status.OK, "ok")


# ---- generated cycles -----------------------------------------------------------------------
QUALITIES = st.one_of(st.just(Quality.GOOD), st.just(Quality.GOOD), st.sampled_from(list(Quality)))
CLOCK_STEPS = st.sampled_from([0.0, 0.0005, 0.001, 0.009, 0.01, 0.011, 0.1, 0.5, 1.0, 1.001, 2.0])


@st.composite
def cycle(draw: st.DrawFn, plant: Plant, names: list[str], prev_values: dict[str, float],
          now: float) -> tuple[dict[str, float], dict[str, Quality], dict[str, float]]:
    s = plant.settings
    # "clean": every tag reads a plausible value, GOOD (the later rules get their turn);
    # "one bad": clean but for one tag; "wild": anything anywhere
    mode = draw(st.sampled_from(["clean", "clean", "one bad", "wild"]))
    values, quality, ts = {}, {}, {}
    for n in names:
        if mode == "wild":
            choices = [readings(plant)]
        else:
            choices = [plausible(plant, n)]
        if n in (s.safety.estop_input, s.safety.hand_auto_tag):
            choices = [st.sampled_from([0.0, 0.0, 0.0, 1.0] if mode != "wild" else [0.0, 1.0])]
        if n in prev_values and math.isfinite(prev_values[n]):
            # near the previous reading: rate-of-change limits get probed on both sides
            p = prev_values[n]
            choices.append(st.sampled_from([p, p + 0.001, p - 0.5, p + 20.0]))
        values[n] = draw(st.one_of(*choices))
        quality[n] = draw(QUALITIES) if mode == "wild" and draw(st.integers(0, 4)) == 0 else Quality.GOOD
        # received now, a while ago (around the stale limits), or never
        ts[n] = (now - draw(st.sampled_from([0.05, 0.15, 0.5, 1.0, 2.0, 10.0, math.nan])))\
            if draw(st.integers(0, 3)) == 0 else now
    if mode == "one bad":
        n = draw(st.sampled_from(names))
        values[n] = draw(readings(plant))
        quality[n] = draw(QUALITIES)
    return values, quality, ts


@each_backend
@PROPERTY
@given(plant=plants(max_actions=4), data=st.data())
def test_checker_matches_the_reference(backend: str, plant: Plant, data: st.DataObject) -> None:
    s = plant.settings
    tags = TagMap.from_settings(s)
    checker = ObservationChecker(s, tags, backend)
    twin = ObservationChecker(s, tags, "numpy") if backend == "c" else None
    ref = RefChecker(s)
    assert checker.names == ref.names
    snap = Snapshot(len(tags.readable))
    snap.values[:] = 0.0
    snap.quality[:] = Quality.GOOD
    snap.recv_mono[:] = 1000.0
    slots = {n: tags.index[n] for n in ref.names}
    now = 1000.0
    prev_values: dict[str, float] = {}
    for k in range(data.draw(st.integers(1, 6), label="cycles")):
        now += data.draw(CLOCK_STEPS, label="clock step") if k else 0.0
        values, quality, ts = data.draw(cycle(plant, ref.names, prev_values, now), label=f"cycle {k}")
        for n, slot in slots.items():
            snap.values[slot] = values[n]
            snap.quality[slot] = quality[n]
            snap.recv_mono[slot] = ts[n]
        # |v - prev| may overflow to inf for huge finite readings: the right answer (a trip
        # where a rate limit is set), and numpy's overflow warning is not a fault
        with np.errstate(over="ignore"):
            verdict = checker.check(snap, now)
            if twin is not None:
                assert twin.check(snap, now) == verdict
                assert_same_bits(checker, twin, CHECKER_STATE, k)
        expected = ref.check(values, quality, ts, now)
        assert (verdict.status, verdict.code) == (expected.status, expected.code), (k, values, quality, ts)
        assert verdict.soft_alarms == ref.soft_alarms
        event(f"cycle {min(k, 2)}: {verdict.code.split(':')[0]}")
        if verdict.status != Status.OK:
            tag = verdict.code.split(":")[1] if ":" in verdict.code else s.safety.estop_input
            assert verdict.message and repr(tag) in verdict.message
        assert np.array_equal(checker.values, np.array([values[n] for n in ref.names]), equal_nan=True)
        prev_values = values


@each_backend
@SMALL
@given(plant=plants(max_actions=2, max_interlocks=2), data=st.data())
def test_non_finite_readings_never_pass(backend: str, plant: Plant, data: st.DataObject) -> None:
    """NaN and ±inf are bad data whatever the configuration: the verdict is never OK."""
    s = plant.settings
    tags = TagMap.from_settings(s)
    checker = ObservationChecker(s, tags, backend)
    snap = Snapshot(len(tags.readable))
    snap.values[:] = 0.0
    snap.quality[:] = Quality.GOOD
    snap.recv_mono[:] = 1000.0
    n = data.draw(st.sampled_from(checker.names))
    snap.values[tags.index[n]] = data.draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    assert checker.check(snap, 1000.0).status != Status.OK
