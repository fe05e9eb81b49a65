"""sd_notify against a datagram socket the test opens (path and abstract namespace)."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from edgewarden.gateway.ops.sdnotify import Notifier


def _receiver(address: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(address)
    s.settimeout(2)
    return s


def test_path_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with _receiver(path) as rx:
        n = Notifier(path)
        assert n.ready("cycling") and n.watchdog() and n.stopping()
        assert rx.recv(4096) == b"READY=1\nSTATUS=cycling"
        assert rx.recv(4096) == b"WATCHDOG=1"
        assert rx.recv(4096) == b"STOPPING=1"
        n.close()


def test_abstract_socket_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"edgewarden-test-{os.getpid()}"
    with _receiver("\0" + name) as rx:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        n = Notifier(min_watchdog_interval_s=60)
        assert n.enabled
        assert n.watchdog() and not n.watchdog()  # rate-limited
        assert rx.recv(4096) == b"WATCHDOG=1"
        n.close()


def test_disabled_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier()
    assert not n.enabled and not n.ready() and not n.watchdog()


@pytest.mark.anyio
async def test_watchdog_only_after_healthy_cycles(tmp_path: Path) -> None:
    from tests.unit.gateway.test_cycle import make_loop

    loop, t, _ = make_loop(tmp_path)
    pings: list[int] = []
    loop.on_healthy_cycle = lambda: pings.append(loop.stats.cycles)

    async def go(n_healthy: int, n_failing: int) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(loop.run(stop))
        while loop.stats.cycles < n_healthy:
            await asyncio.sleep(0.01)
        t.fail_writes = True  # the PLC refuses our writes: not a healthy cycle
        start = loop.stats.cycles
        while loop.stats.cycles < start + n_failing:
            await asyncio.sleep(0.01)
        stop.set()
        await task

    await go(3, 3)
    assert len(pings) >= 3
    assert max(pings) <= 3 + 1  # no WATCHDOG=1 once writes fail
