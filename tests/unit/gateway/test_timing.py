"""Cycle timing options: CPU affinity, SCHED_FIFO (a clear refusal when not permitted),
the event loop choice, and the per-cycle timing trace."""

from __future__ import annotations

import asyncio
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from gateway import timing
from gateway.config import GatewaySection
from gateway.errors import ConfigError
from gateway.modes import Mode
from gateway.timing import TRACE_FIELDS, CycleTrace
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
    assert calls == [(0, os.SCHED_FIFO, 20)]
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


def test_running_loop_traces_every_cycle_and_feeds_the_histograms(tmp_path: Path) -> None:
    loop, _, _ = make_loop(tmp_path, replace={
        r"^cycle_hz = 10.0": "cycle_hz = 200.0\nbusy_wait_us = 1500\ntiming_trace = \"trace.npy\"",
        r"^auto_start = false": "auto_start = true"})
    assert loop.trace is not None

    async def go() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(loop.run(stop))
        while loop.stats.cycles < 40:
            await asyncio.sleep(0.02)
        stop.set()
        await task

    asyncio.run(go())
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
