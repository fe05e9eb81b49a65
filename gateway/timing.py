"""Cycle timing: how the daemon's process is scheduled, and the per-cycle timing trace.

``[gateway]`` options (docs/operations.md, *Cycle timing*):

* ``cpu_affinity = [1]``: ``os.sched_setaffinity`` for the whole process (every thread
  started later inherits it), so the cycle does not migrate between cores.
* ``realtime_priority = 50``: ``SCHED_FIFO`` at that priority (``os.sched_setscheduler``).
  Needs ``CAP_SYS_NICE`` or an ``RLIMIT_RTPRIO`` that allows it (the systemd real-time
  drop-in grants it). Not permitted is a refusal to start with the reason, never a
  silent fall-back to normal scheduling: a plant engineer who asked for it is counting on it.
* ``event_loop = "uvloop"``: run the daemon on uvloop (``pip install edgewarden[uvloop]``).
* ``timing_trace = "PATH.npy"``: keep every cycle's lateness and stage times in a
  pre-allocated ring (``timing_trace_cycles`` rows) and save it when the daemon stops.
  The exact source for benchmarks; Prometheus histograms are bucketed.

All of it is applied in :func:`prepare_process` before the event loop and any thread exist.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import numpy as np

from gateway.config import GatewaySection
from gateway.errors import ConfigError

# one row per cycle; "work" is the whole step, "metrics" the bookkeeping after it
TRACE_FIELDS = ("lateness", "read", "check", "infer", "shield", "write", "audit", "metrics", "work")
COL = {name: i for i, name in enumerate(TRACE_FIELDS)}


def prepare_process(gw: GatewaySection) -> list[str]:
    """Apply CPU affinity and real-time priority as configured; return what was done.

    Raises ConfigError (exit 78: restarting cannot fix it) when the kernel refuses.
    """
    done: list[str] = []
    if gw.cpu_affinity:
        cpus = set(gw.cpu_affinity)
        try:
            os.sched_setaffinity(0, cpus)
        except (OSError, ValueError) as exc:
            have = sorted(os.sched_getaffinity(0))
            raise ConfigError(f"[gateway] cpu_affinity = {sorted(cpus)}: the kernel refused it ({exc}); "
                              f"this process may run on CPUs {have}") from None
        done.append(f"cpu_affinity={sorted(cpus)}")
    if gw.realtime_priority is not None:
        prio = gw.realtime_priority
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(prio))
        except PermissionError:
            import resource

            soft, _ = resource.getrlimit(resource.RLIMIT_RTPRIO)
            raise ConfigError(
                f"[gateway] realtime_priority = {prio}: SCHED_FIFO is not permitted for this process "
                f"(it needs CAP_SYS_NICE or RLIMIT_RTPRIO >= {prio}; RLIMIT_RTPRIO is {soft}). Install "
                "the real-time drop-in (edgewarden service install --realtime) or remove the option "
                "to run with normal scheduling") from None
        except OSError as exc:
            raise ConfigError(f"[gateway] realtime_priority = {prio}: SCHED_FIFO refused: {exc}") from None
        done.append(f"SCHED_FIFO priority {prio}")
    return done


def loop_factory(gw: GatewaySection) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop the daemon runs on: None for asyncio's default, or uvloop's."""
    if gw.event_loop == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        raise ConfigError("[gateway] event_loop = \"uvloop\": uvloop is not installed "
                          "(pip install 'edgewarden[uvloop]', or set event_loop = \"asyncio\")") from None
    return uvloop.new_event_loop  # type: ignore[no-any-return]


def run(main: Coroutine[Any, Any, int], gw: GatewaySection) -> int:
    """asyncio.run on the configured loop."""
    with asyncio.Runner(loop_factory=loop_factory(gw)) as runner:
        return runner.run(main)


class CycleTrace:
    """Every cycle's timings in a ring of pre-allocated rows (seconds; NaN = stage not run).

    The cycle writes floats into ``row`` (a view, reused) and calls :meth:`commit`; no
    allocation per cycle. ``save`` writes the rows in cycle order as a ``.npy`` file
    with shape (cycles, len(TRACE_FIELDS)).
    """

    def __init__(self, capacity: int) -> None:
        self.rows = np.full((capacity, len(TRACE_FIELDS)), np.nan)
        self.capacity = capacity
        self.count = 0
        self.row = self.rows[0]

    def commit(self) -> None:
        self.count += 1
        self.row = self.rows[self.count % self.capacity]  # the cycle overwrites every column

    def ordered(self) -> np.ndarray:
        n, cap = self.count, self.capacity
        if n <= cap:
            return self.rows[:n].copy()
        k = n % cap
        return np.concatenate([self.rows[k:], self.rows[:k]])

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as f:
            np.save(f, self.ordered())
        os.replace(tmp, path)
