"""Disk full / write error under the real gateway: it leaves AUTO for the safe state and says why.

The gateway runs in this process against the CSTR twin (real OPC UA server, PLC scan,
watchdog). Once it is in AUTO, the audit writer thread's ``os.write`` (disk full,
ENOSPC) or ``os.fsync`` (EIO) starts failing; only that thread is affected, so the
event loop and the servers keep working. Expected: e-stop with reason
``audit_failure`` naming the OS error, the safe outputs at the twin, and a gateway that
is still answering (it does not crash out of the loop and leave the plant to the
dead-man alone).
"""

from __future__ import annotations

import asyncio
import errno
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import edgewarden.gateway.audit.writer as writer_mod
from edgewarden.data import MODELS
from edgewarden.gateway.app import Gateway
from edgewarden.gateway.config import load_config
from edgewarden.gateway.errors import AuditError
from edgewarden.simulators.twin import Twin
from tests.helpers import write_config

SHIPPED = MODELS / "cstr_baseline.onnx"


async def _until(predicate: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def _failing(real: Any, err: int) -> Any:
    def call(*args: Any) -> Any:
        if threading.current_thread().name == "audit-writer":
            raise OSError(err, os.strerror(err))
        return real(*args)
    return call


async def _scenario(tmp: Path, monkeypatch: pytest.MonkeyPatch, which: str) -> None:
    async with Twin("cstr", opcua=("127.0.0.1", 0), modbus=("127.0.0.1", 0), watchdog_ms=500) as twin:
        image = twin.image
        config = write_config(tmp, policy=SHIPPED, url=twin.opcua_url,
                              replace={r"^cycle_hz = 10.0": "cycle_hz = 20.0"})
        gw = Gateway(load_config(config))
        task = asyncio.create_task(gw.run())
        try:
            await _until(lambda: gw.loop is not None and gw.loop.modes.mode.name == "READY" or task.done(),
                         "READY")
            assert not task.done(), task.exception()
            assert gw.loop is not None and gw.audit is not None
            gw.loop.request_start("test-operator")
            await _until(lambda: gw.loop.modes.mode.name == "AUTO" and image["feed_flow_sp"] == 100.0,
                         "AUTO with actions at the twin")

            if which == "write":
                monkeypatch.setattr(writer_mod.os, "write", _failing(os.write, errno.ENOSPC))
            else:
                monkeypatch.setattr(writer_mod.os, "fsync", _failing(os.fsync, errno.EIO))

            await _until(lambda: gw.loop.modes.mode.name == "ESTOP", "the e-stop", timeout=5.0)
            last = gw.loop.estop.last
            assert last is not None and last.code == "audit_failure"
            expected = "No space left on device" if which == "write" else "Input/output error"
            assert expected in last.message, last.message
            assert gw.audit.failed is not None
            await _until(lambda: image["coolant_flow"] == 200.0 and image["feed_flow"] == 0.0,
                         "the safe outputs at the twin", timeout=3.0)
            # then it stops (a gateway that cannot record does not go on), the plant left safe:
            # its run ends with the audit failure (the CLI's exit 74)
            await _until(task.done, "the daemon to stop", timeout=10.0)
            assert gw.stop_reason.startswith("the audit log failed"), gw.stop_reason
            with pytest.raises(AuditError, match="audit log write failed"):
                task.result()
            assert gw.loop.modes.mode.name == "ESTOP"
            assert (image["coolant_flow"], image["feed_flow"]) == (200.0, 0.0)
        finally:
            monkeypatch.undo()
            gw.request_stop()
            try:
                await asyncio.wait_for(task, 10)
            except Exception as exc:  # noqa: BLE001 - the close re-raises the audit failure
                assert "audit" in str(exc).lower(), exc


@pytest.mark.anyio
@pytest.mark.parametrize("which", ["write", "fsync"])
async def test_audit_write_error_trips_gateway_to_safe_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       which: str) -> None:
    await _scenario(tmp_path, monkeypatch, which)


@pytest.mark.anyio
async def test_cycle_trips_itself_when_the_log_fails_between_two_cycles(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """No race with on_fatal: the first cycle whose record cannot be queued trips the e-stop."""
    from edgewarden.gateway.app import load_policy
    from edgewarden.gateway.audit import AuditWriter
    from edgewarden.gateway.cycle import ControlLoop
    from edgewarden.gateway.io.memory import MemoryTransport
    from edgewarden.gateway.io.tags import TagMap
    from edgewarden.gateway.modes import ModeMachine
    from edgewarden.gateway.ops.metrics import Metrics
    from tests.helpers import write_linear_policy

    healthy = {"T": 350.0, "CA": 0.5, "Tj": 332.0, "T_sp": 350.0, "plc_estop": 0.0, "plc_auto": 1.0, "plc_remote": 1.0, "plc_watchdog": 0.0,
               "coolant_flow_sp": 100.0, "feed_flow_sp": 100.0, "coolant_flow": 100.0, "feed_flow": 100.0}
    s = load_config(write_config(tmp_path, policy=write_linear_policy(tmp_path / "p.onnx"))).settings
    tags = TagMap.from_settings(s)
    transport = MemoryTransport(tags, healthy)
    audit = AuditWriter(tmp_path / "audit", commit_interval_s=0.001).open()  # no on_fatal: only the cycle
    loop = ControlLoop(s, tags, transport, load_policy(s), ModeMachine(), audit, Metrics())

    async def go() -> None:
        await loop.step()
        loop.request_start("test")
        for _ in range(3):
            await loop.step()
        assert loop.modes.mode.name == "AUTO"
        monkeypatch.setattr(writer_mod.os, "write", _failing(os.write, errno.ENOSPC))
        audit.append("cycle", {"filler": True})
        await _until(lambda: audit.failed is not None, "the writer to fail")
        await loop.step()
        assert loop.modes.mode.name == "ESTOP"
        assert loop.estop.last is not None and loop.estop.last.code == "audit_failure"
        assert "No space left on device" in loop.estop.last.message
        safe, hb = transport.writes[-2:]  # the safe outputs, then (acknowledged) the heartbeat
        assert safe == {"coolant_flow_sp": 200.0, "feed_flow_sp": 0.0} and set(hb) == {"heartbeat"}

    try:
        await go()
    finally:
        monkeypatch.undo()
        with pytest.raises(Exception, match="No space left"):
            audit.close()


@pytest.mark.anyio
async def test_the_audit_directory_removed_in_auto_trips_stops_and_is_refused_at_restart(tmp_path: Path) -> None:
    """It used to run on in AUTO, writing into unlinked files; a restart then began a new
    chain at seq 1 that verified: the earlier runs gone without a trace."""
    import shutil

    async with Twin("cstr", opcua=("127.0.0.1", 0), modbus=None, watchdog_ms=500) as twin:
        image = twin.image
        config = write_config(tmp_path, policy=SHIPPED, url=twin.opcua_url,
                              replace={r"^cycle_hz = 10.0": "cycle_hz = 20.0"})
        gw = Gateway(load_config(config))
        task = asyncio.create_task(gw.run())
        await _until(lambda: gw.loop is not None and gw.loop.modes.mode.name == "READY" or task.done(), "READY")
        assert gw.loop is not None
        gw.loop.request_start("test-operator")
        await _until(lambda: gw.loop.modes.mode.name == "AUTO" and image["feed_flow_sp"] == 100.0, "AUTO")
        shutil.rmtree(tmp_path / "audit")
        await _until(task.done, "the daemon to stop", timeout=10.0)
        assert gw.loop.estop.last is not None and gw.loop.estop.last.code == "audit_failure"
        assert "was removed or replaced" in gw.loop.estop.last.message
        with pytest.raises(AuditError):
            task.result()
        await _until(lambda: (image["coolant_flow"], image["feed_flow"]) == (200.0, 0.0), "the safe outputs")
        again = Gateway(load_config(config))  # systemd restarts it: refused, not a new chain at seq 1
        with pytest.raises(AuditError, match="edgewarden audit new-chain"):
            await again.run()
