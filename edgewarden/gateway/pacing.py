"""Keeping the control cycle on its grid.

Deadlines lie on the ideal grid ``t0 + k·period`` of ``time.perf_counter`` (uvloop's
``loop.time()`` counts whole milliseconds). A cycle that overruns skips the ticks already
passed and counts a miss; ``max_consecutive`` misses in a row, or no cycle on time for
longer than ``late_budget_s`` (``comms_timeout_ms``), are reasons to trip.
"""

from __future__ import annotations

import asyncio
import math
import time

SPIN_S = 150e-6  # the last stretch before a deadline is spun: a nanosleep overshoots (docs/performance.md)


async def sleep_until(deadline: float, busy_s: float) -> None:
    """Sleep on the event loop (whole-millisecond timers) until ``busy_s`` before the
    deadline; then, if ``busy_s``, a blocking nanosleep (GIL released: the audit and
    metrics threads run) to SPIN_S before it, and a spin for the rest."""
    clock = time.perf_counter
    delay = deadline - clock() - busy_s
    if delay > 0:
        await asyncio.sleep(delay)
    if busy_s:
        rest = deadline - clock() - SPIN_S
        if rest > 0:
            time.sleep(rest)
        while clock() < deadline:
            pass


class Pacer:
    """The cycle's deadlines, the wait for them, and its overruns."""

    def __init__(self, period: float, busy_s: float, max_consecutive: int, late_budget_s: float) -> None:
        self.period = period
        self.busy_s = busy_s
        self.max_consecutive = max_consecutive
        self.late_budget_s = late_budget_s
        self.misses = 0
        self.consecutive = 0  # overruns in a row, 0 after a cycle on time
        self.on_time_mono = time.monotonic()  # end of the last cycle that met its deadline

    def start(self) -> float:
        """The first deadline, one period from now; the late budget counts from here."""
        self.on_time_mono = time.monotonic()
        return time.perf_counter() + self.period

    async def wait(self, deadline: float) -> None:
        await sleep_until(deadline, self.busy_s)

    def advance(self, deadline: float) -> float:
        """The next deadline after a cycle's work; after an overrun, the first tick not yet passed."""
        period = self.period
        deadline += period
        now = time.perf_counter()
        if now <= deadline:
            self.consecutive = 0
            self.on_time_mono = time.monotonic()
            return deadline
        self.misses += 1
        self.consecutive += 1
        return deadline + (math.floor((now - deadline) / period) + 1) * period

    def over_budget(self) -> str | None:
        """Why the overruns so far must trip the e-stop, or None."""
        ms = self.period * 1000
        if self.consecutive >= self.max_consecutive:
            return f"{self.consecutive} consecutive cycles overran the {ms:.1f} ms period"
        if self.consecutive and time.monotonic() - self.on_time_mono > self.late_budget_s:
            return f"no cycle met its {ms:.1f} ms deadline for more than {self.late_budget_s * 1000:.0f} ms"
        return None
