"""Cycle timing: how the daemon's process is scheduled, and the per-cycle timing trace.

``[gateway]`` options (docs/operations.md, *Cycle timing*):

* ``cpu_affinity = [1]``: ``os.sched_setaffinity`` for the whole process (every thread
  started later inherits it), so the cycle does not migrate between cores.
* ``realtime_priority = 50``: ``SCHED_FIFO`` at that priority (``os.sched_setscheduler``) for
  the thread that runs the cycle only; every thread started later runs at normal priority.
  Needs an ``RLIMIT_RTPRIO`` that allows it (or ``CAP_SYS_NICE``) and no system-call filter
  that denies it (the systemd real-time drop-in grants the one and allows the calls). Not
  permitted is a refusal to start with the reason, never a
  silent fall-back to normal scheduling: a plant engineer who asked for it is counting on it.
* ``event_loop = "uvloop"``: run the daemon on uvloop (``pip install edgewarden[uvloop]``).
* ``timing_trace = "PATH.npy"``: keep every cycle's lateness and stage times in a
  pre-allocated ring (``timing_trace_cycles`` rows) and save it when the daemon stops.
  The exact source for benchmarks; Prometheus histograms are bucketed.
* ``gc = "between_cycles"``: the garbage collector never starts on its own inside a
  cycle (:class:`CycleGc`). Either way :class:`GcPauses` times every collection, whichever
  thread ran it (the ``gc`` stage of the trace and the metrics).

All of it is applied in :func:`prepare_process` before the event loop and any thread exist.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import numpy as np

from edgewarden.gateway.config import GatewaySection
from edgewarden.gateway.errors import ConfigError

# one row per cycle; "work" is the whole step, "metrics" the bookkeeping after it
# "gc" is the time the garbage collector held the interpreter during the cycle (GcPauses)
TRACE_FIELDS = ("lateness", "read", "check", "infer", "shield", "write", "audit", "metrics", "work", "gc")
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
        except PermissionError:
            raise ConfigError(f"[gateway] cpu_affinity = {sorted(cpus)}: sched_setaffinity was refused{_filtered()}"
                              ) from None
        except (OSError, ValueError) as exc:
            have = sorted(os.sched_getaffinity(0))
            raise ConfigError(f"[gateway] cpu_affinity = {sorted(cpus)}: the kernel refused it ({exc}); "
                              f"this process may run on CPUs {have}") from None
        done.append(f"cpu_affinity={sorted(cpus)}")
    if gw.realtime_priority is not None:
        prio = gw.realtime_priority
        try:
            # RESET_ON_FORK: threads started later (the audit writer, the metrics server, worker
            # threads) run at normal priority. At the cycle's FIFO priority on the cycle's CPU, a
            # thread that is busy holds that CPU until it blocks (FIFO does not time-slice): the
            # cycle, woken by its socket, would wait for the audit writer's whole batch. At
            # normal priority it is preempted the moment the cycle wakes.
            os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(prio))
        except PermissionError:
            import resource

            soft, _ = resource.getrlimit(resource.RLIMIT_RTPRIO)
            if soft == resource.RLIM_INFINITY or soft >= prio:  # the limit allows it: something else refuses
                why = f"RLIMIT_RTPRIO ({soft}) allows it, so it is not the limit{_filtered()}"
            else:
                why = (f"it needs RLIMIT_RTPRIO >= {prio} (it is {soft}) or CAP_SYS_NICE. Install the real-time "
                       "drop-in (edgewarden service install --realtime: LimitRTPRIO=50) or remove the option "
                       "to run with normal scheduling")
            raise ConfigError(f"[gateway] realtime_priority = {prio}: SCHED_FIFO is not permitted for this "
                              f"process: {why}") from None
        except OSError as exc:
            raise ConfigError(f"[gateway] realtime_priority = {prio}: SCHED_FIFO refused: {exc}") from None
        done.append(f"SCHED_FIFO priority {prio}")
    return done


def _filtered() -> str:
    """Why a scheduling call may be refused whatever the limits: a seccomp filter (systemd's
    SystemCallFilter=~@resources) or systemd's RestrictRealtime=."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        status = ""
    if "\nSeccomp:\t2" in status:
        return ("; a system-call filter is active (systemd's SystemCallFilter=~@resources denies the scheduling "
                "calls): install the real-time drop-in (edgewarden service install --realtime), which allows "
                "them and sets RestrictRealtime=no, or remove the option")
    return "; check systemd's RestrictRealtime= and CPUAffinity= for this service"


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


class GcPauses:
    """Time spent in the garbage collector, from ``gc.callbacks``.

    A collection holds the GIL whichever thread triggers it (the cycle, the audit writer,
    a library's thread), so it stalls the cycle either way: ``take`` returns the seconds
    collected since the last call. The callback only adds floats: it must not take a lock
    (a collection can start while the metrics hold theirs).
    """

    def __init__(self) -> None:
        self._total = 0.0
        self._started = 0.0
        self.collections = [0, 0, 0]
        self.max_s = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        dt = time.perf_counter() - self._started
        self._total += dt
        self.collections[info["generation"]] += 1
        if dt > self.max_s:
            self.max_s = dt

    def take(self) -> float:
        total, self._total = self._total, 0.0
        return total

    def report(self) -> dict[str, Any]:
        """Collections per generation, the longest and the total (ms) since the last report."""
        out = {"gc_collections": self.collections, "gc_max_ms": self.max_s * 1e3, "gc_total_ms": self.take() * 1e3}
        self.collections, self.max_s = [0, 0, 0], 0.0
        return out

    def close(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)


class CycleGc:
    """``gc = "between_cycles"``: collect where a cycle can afford it, never inside one.

    CPython collects when allocations pass a threshold, at whatever line of whatever thread
    makes the allocation: inside a read, a check or the audit writer. A full (oldest
    generation) collection walks every tracked object, which in a daemon holding asyncua,
    pymodbus, onnxruntime and numpy is tens of milliseconds: a 500 Hz cycle misses several
    deadlines. Here, after start-up everything alive is frozen (``gc.freeze``: never
    scanned again, it lives as long as the process), automatic collection is off, and
    :meth:`collect` runs after each cycle's work with CPython's own generation thresholds,
    so a collection only walks what the running daemon allocated since start-up.
    """

    def __init__(self) -> None:
        self.thresholds = gc.get_threshold()
        self._was_enabled = gc.isenabled()
        gc.collect()
        gc.freeze()
        gc.disable()

    def collect(self) -> None:
        c0, c1, c2 = gc.get_count()
        t0, t1, t2 = self.thresholds
        if t0 == 0 or c0 < t0:  # a threshold of 0 turns collection off, as in CPython
            return
        gc.collect(2 if c2 >= t2 else 1 if c1 >= t1 else 0)

    def close(self) -> None:
        gc.unfreeze()
        if self._was_enabled:
            gc.enable()
