"""Silence from the plant, timed against ``comms_timeout_ms``.

Comms loss: no good read on some link, or no acknowledged write, for the timeout. It is
judged ahead: lost when the silence would outlast the timeout before the next cycle's
check (the next tick, past the ticks a cycle as long as the last one overruns), so it
trips after between ``comms_timeout_ms`` − one cycle and ``comms_timeout_ms`` of silence
and the e-stop lands within the budget whatever the phase.

Held data: a cycle whose data is not usable (stale, no data) holds the last action; a
hold that lasts as long while actions are written is no better than silence: no open-loop
run on a frozen sensor.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

from edgewarden.gateway.io.transport import LinkHealth


class SilenceWatch:
    def __init__(self, timeout_s: float, period: float) -> None:
        self.timeout_s = timeout_s
        self.period = period
        self.started_mono = time.monotonic()  # links never read good count from here
        self._hold_since = math.nan

    def start(self, now: float) -> None:
        self.started_mono = now

    def expiry(self, acked_mono: float, links: Iterable[LinkHealth]) -> float:
        """When comms loss trips: the timeout after the oldest of each link's last good read
        and the last acknowledged write (a link whose notifications still arrive but which
        acknowledges nothing in time is not one the gateway can control through)."""
        oldest = acked_mono
        for link in links:
            last = link.last_ok_mono
            oldest = min(oldest, last if math.isfinite(last) else self.started_mono)
        return oldest + self.timeout_s

    def lost(self, now: float, last_cycle_s: float, acked_mono: float, links: Iterable[LinkHealth]) -> bool:
        period = self.period
        ahead = period * (1 + int(last_cycle_s // period)) if last_cycle_s == last_cycle_s else period
        return now + ahead > self.expiry(acked_mono, links)

    def held_too_long(self, holding: bool, now: float) -> bool:
        """``holding``: this cycle holds while actions are written. True once that has
        lasted longer than the timeout."""
        if not holding:
            self._hold_since = math.nan
        elif math.isnan(self._hold_since):
            self._hold_since = now
        else:
            return now - self._hold_since > self.timeout_s
        return False
