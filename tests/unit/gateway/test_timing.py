"""Cycle timing options: CPU affinity, SCHED_FIFO (a clear refusal when not permitted),
the event loop choice, and the per-cycle timing trace."""

from __future__ import annotations

import asyncio
import gc
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edgewarden.gateway import timing
from edgewarden.gateway.config import GatewaySection
from edgewarden.gateway.errors import ConfigError
from edgewarden.gateway.modes import Mode
from edgewarden.gateway.timing import TRACE_FIELDS, CycleGc, CycleTrace, GcPauses
from tests.unit.gateway.test_cycle import make_loop


def test_affinity_is_applied_and_a_bad_cpu_is_a_clear_error() -> None:
    before = os.sched_getaffinity(0)
    try:
        cpu = min(before)
        assert timing.prepare_process(GatewaySection(cpu_affinity=[cpu])) == [f"cpu_affinity=[{cpu}]"]
        assert os.sched_getaffinity(0) == {cpu}
        with pytest.raises(ConfigError, match=r"cpu_affinity = \[4096\]: the kernel refused it"):
            timing.prepare_process(GatewaySection(cpu_affinity=[4096]))
    finally:
        os.sched_setaffinity(0, before)


def test_realtime_priority_not_permitted_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(pid: int, policy: int, param: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    with pytest.raises(ConfigError, match=r"realtime_priority = 50: SCHED_FIFO is not permitted .*CAP_SYS_NICE"):
        timing.prepare_process(GatewaySection(realtime_priority=50))


def test_realtime_priority_is_requested_as_fifo(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(os, "sched_setscheduler", lambda pid, policy, param: calls.append(
        (pid, policy, param.sched_priority)))
    assert timing.prepare_process(GatewaySection(realtime_priority=20)) == ["SCHED_FIFO priority 20"]
    assert calls == [(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, 20)]
    assert timing.prepare_process(GatewaySection()) == []


def test_event_loop_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert timing.loop_factory(GatewaySection()) is None

    async def kind() -> int:
        return 0 if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else 1

    gw = GatewaySection(event_loop="uvloop")
    pytest.importorskip("uvloop")
    assert timing.run(kind(), gw) == 0
    assert timing.run(kind(), GatewaySection()) == 1
    monkeypatch.setitem(sys.modules, "uvloop", None)  # not installed
    with pytest.raises(ConfigError, match=r"uvloop is not installed"):
        timing.loop_factory(gw)


def test_trace_ring_keeps_the_last_cycles_in_order(tmp_path: Path) -> None:
    trace = CycleTrace(4)
    for k in range(6):
        trace.row[:] = [float(k)] * len(TRACE_FIELDS)
        trace.commit()
    assert trace.ordered()[:, 0].tolist() == [2.0, 3.0, 4.0, 5.0]
    trace.save(tmp_path / "t" / "trace.npy")
    assert np.load(tmp_path / "t" / "trace.npy").shape == (4, len(TRACE_FIELDS))


@pytest.mark.anyio
async def test_running_loop_traces_every_cycle_and_feeds_the_histograms(tmp_path: Path) -> None:
    loop, _, _ = make_loop(tmp_path, replace={
        r"^cycle_hz = 10.0": "cycle_hz = 200.0\nbusy_wait_us = 1500\ntiming_trace = \"trace.npy\"",
        r"^auto_start = false": "auto_start = true"})
    assert loop.trace is not None

    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    while loop.stats.cycles < 40:
        await asyncio.sleep(0.02)
    stop.set()
    await task
    assert loop.modes.mode == Mode.AUTO
    rows = loop.trace.ordered()
    assert len(rows) == loop.stats.cycles
    col = {name: rows[:, i] for i, name in enumerate(TRACE_FIELDS)}
    for name in ("lateness", "read", "check", "write", "audit", "metrics", "work"):
        assert np.isfinite(col[name]).all(), name
    assert np.isfinite(col["infer"][-5:]).all()  # AUTO: the policy ran
    assert (col["lateness"] > -0.001).all()  # never woken more than a spin early
    reg = loop.metrics.registry
    for stage in ("read", "write", "metrics"):
        assert reg.get_sample_value("edgewarden_stage_seconds_count", {"stage": stage}) == loop.stats.cycles
    assert not math.isnan(loop.stats.max_lateness_s)


def test_only_the_cycle_thread_is_real_time() -> None:
    """Threads started after prepare_process (audit writer, metrics server) run at normal
    priority: at the cycle's FIFO priority on its CPU a busy one would hold the CPU until it
    blocked, and the cycle, woken by its socket, would wait for it. Real SCHED_FIFO, in a
    child process (needs CAP_SYS_NICE or RLIMIT_RTPRIO; skipped where not permitted)."""
    code = textwrap.dedent("""
        import os, threading
        from edgewarden.gateway import timing
        from edgewarden.gateway.config import GatewaySection
        timing.prepare_process(GatewaySection(realtime_priority=10))
        seen = []
        t = threading.Thread(target=lambda: seen.append(os.sched_getscheduler(0)))
        t.start(); t.join()
        print(os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK == os.SCHED_FIFO, seen[0] == os.SCHED_OTHER)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    if "SCHED_FIFO is not permitted" in out.stderr:
        pytest.skip("SCHED_FIFO is not permitted here")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]


def test_gc_pauses_are_timed_whichever_thread_collects() -> None:
    pauses = GcPauses()
    try:
        pauses.take()
        import threading
        t = threading.Thread(target=gc.collect)
        t.start()
        t.join()
        gc.collect(0)
        assert pauses.take() > 0.0
        assert pauses.take() == 0.0
        assert pauses.collections[2] >= 1 and pauses.collections[0] >= 1
    finally:
        pauses.close()
    assert pauses._callback not in gc.callbacks


def test_between_cycles_collects_by_cpython_thresholds_and_restores_gc() -> None:
    assert gc.isenabled()
    between = CycleGc()
    pauses = GcPauses()
    try:
        assert not gc.isenabled() and gc.get_freeze_count() > 0
        t0 = between.thresholds[0]
        keep = [[] for _ in range(t0 // 2)]  # tracked containers, below the first threshold
        between.collect()
        assert pauses.collections == [0, 0, 0]
        keep += [[] for _ in range(t0)]  # past it: the youngest generation is collected
        between.collect()
        assert pauses.collections[0] == 1 and gc.get_count()[0] < t0
        del keep
    finally:
        pauses.close()
        between.close()
    assert gc.isenabled() and gc.get_freeze_count() == 0


@pytest.mark.anyio
async def test_running_loop_with_gc_between_cycles(tmp_path: Path) -> None:
    loop, _, _ = make_loop(tmp_path, replace={
        r"^cycle_hz = 10.0": "cycle_hz = 200.0\ngc = \"between_cycles\"\ntiming_trace = \"trace.npy\"",
        r"^auto_start = false": "auto_start = true"})
    enabled = []

    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    while loop.stats.cycles < 40:
        enabled.append(gc.isenabled())
        await asyncio.sleep(0.02)
    stop.set()
    await task
    assert enabled[-1] is False  # the collector never started on its own while the loop ran
    assert gc.isenabled() and gc.get_freeze_count() == 0  # and is back as it was
    gc_col = loop.trace.ordered()[:, TRACE_FIELDS.index("gc")]
    assert np.isfinite(gc_col).all() and (gc_col >= 0).all()
