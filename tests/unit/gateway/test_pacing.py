"""The cycle's deadline grid and overrun rule (edgewarden/gateway/pacing.py), and the silence watch
(edgewarden/gateway/safety/silence.py), on their own; the loop's use of both is tested in
test_cycle.py and tests/fault/test_trips.py."""

from __future__ import annotations

import math
import time

import pytest

from edgewarden.gateway.io.transport import LinkHealth
from edgewarden.gateway.pacing import Pacer
from edgewarden.gateway.safety.silence import SilenceWatch


def test_on_time_cycles_keep_the_grid_and_reset_the_count() -> None:
    pacer = Pacer(0.5, 0.0, 3, 1.0)
    first = pacer.start()
    assert pacer.advance(first) == pytest.approx(first + 0.5)  # the grid, not "now + period"
    assert (pacer.misses, pacer.consecutive, pacer.over_budget()) == (0, 0, None)


def test_an_overrun_skips_passed_ticks_and_counts_once() -> None:
    period = 0.01
    pacer = Pacer(period, 0.0, 3, 60.0)
    late = time.perf_counter() - 3.5 * period  # this cycle's deadline was 3.5 periods ago
    nxt = pacer.advance(late)
    assert nxt > time.perf_counter() - period  # the first tick not yet passed ...
    assert (nxt - late) / period == pytest.approx(round((nxt - late) / period))  # ... on the grid
    assert (pacer.misses, pacer.consecutive) == (1, 1)
    assert pacer.over_budget() is None
    pacer.advance(time.perf_counter() - 2 * period)
    pacer.advance(time.perf_counter() - 2 * period)
    assert (pacer.misses, pacer.consecutive) == (3, 3)
    assert pacer.over_budget() == "3 consecutive cycles overran the 10.0 ms period"
    pacer.advance(time.perf_counter())  # on time again
    assert (pacer.misses, pacer.consecutive, pacer.over_budget()) == (3, 0, None)


def test_overruns_that_outlast_the_late_budget_trip_before_the_count() -> None:
    pacer = Pacer(0.01, 0.0, 1000, 0.0)
    pacer.start()
    assert pacer.over_budget() is None  # on time so far: no budget to outlast
    pacer.advance(time.perf_counter() - 0.05)
    assert pacer.over_budget() == "no cycle met its 10.0 ms deadline for more than 0 ms"


def _link(last_ok: float) -> LinkHealth:
    return LinkHealth(last_ok_mono=last_ok)


def test_comms_loss_is_judged_one_cycle_ahead_from_the_oldest_silence() -> None:
    watch = SilenceWatch(1.0, 0.1)
    watch.start(100.0)
    links = [_link(100.5), _link(100.2)]
    assert watch.expiry(100.9, links) == pytest.approx(101.2)  # the oldest good read decides
    assert not watch.lost(101.0, 0.01, 100.9, links)  # 1.1 + one period = 101.1 < 101.2
    assert watch.lost(101.15, 0.01, 100.9, links)
    # a cycle as long as 2.5 periods looks three ticks ahead
    assert watch.lost(100.95, 0.25, 100.9, links)
    # a link never read good counts from the start; an old ack is as silent as an old read
    assert watch.expiry(105.0, [_link(math.nan)]) == pytest.approx(101.0)
    assert watch.expiry(100.1, links) == pytest.approx(101.1)


def test_a_hold_trips_only_while_it_lasts_longer_than_the_timeout() -> None:
    watch = SilenceWatch(1.0, 0.1)
    assert not watch.held_too_long(True, 10.0)
    assert not watch.held_too_long(True, 11.0)
    assert watch.held_too_long(True, 11.01)
    assert not watch.held_too_long(False, 11.02)  # usable data (or not writing) ends the hold
    assert not watch.held_too_long(True, 11.5)
    assert not watch.held_too_long(True, 12.4)
    assert watch.held_too_long(True, 12.6)
