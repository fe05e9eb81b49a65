"""A real CSTR twin and a real Gateway in one asyncio loop, for fault-injection tests."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgewarden.data import MODELS
from edgewarden.gateway.app import Gateway
from edgewarden.gateway.audit.verify import iter_records, verify
from edgewarden.gateway.config import load_config
from edgewarden.gateway.ops.control import send_command
from edgewarden.simulators.harness import free_port  # noqa: F401 (re-exported for the fault tests)
from edgewarden.simulators.twin import Twin
from tests import helpers
from tests.helpers import write_config

SHIPPED = MODELS / "cstr_baseline.onnx"
OPERATOR = "test-operator"


# fault tests poll faster and give up sooner than the subprocess tests
wait_for = functools.partial(helpers.wait_for, timeout=10.0, interval=0.01)


@dataclass
class Bench:
    twin: Twin
    gateway: Gateway
    tmp: Path

    @property
    def sock(self) -> Path:
        return self.gateway.settings.control.socket

    async def cmd(self, cmd: str, **kw: Any) -> dict[str, Any]:
        return await send_command(self.sock, {"cmd": cmd, "actor": OPERATOR, **kw})

    async def status(self) -> dict[str, Any]:
        return await helpers.control_status(self.sock)

    @property
    def mode(self) -> str:
        assert self.gateway.loop is not None
        return self.gateway.loop.modes.mode.name

    def twin_setpoints(self) -> tuple[float, float]:
        img = self.twin.image
        return float(img["coolant_flow_sp"]), float(img["feed_flow_sp"])

    def twin_applied(self) -> tuple[float, float]:
        img = self.twin.image
        return float(img["coolant_flow"]), float(img["feed_flow"])

    async def start_auto(self) -> None:
        await wait_for(lambda: self.gateway.loop is not None and self.mode == "READY", "READY")
        reply = await self.cmd("start")
        assert reply["ok"], reply
        await wait_for(lambda: self.twin_setpoints()[1] == 100.0, "policy actions at the twin")

    def audit_records(self) -> list[dict[str, Any]]:
        assert self.gateway.audit is not None
        self.gateway.audit.flush()
        return [r.payload for r in iter_records(self.tmp / "audit")]


@contextlib.asynccontextmanager
async def running_gateway(config: Path) -> AsyncIterator[Gateway]:
    """The real Gateway for ``config`` in this event loop, started (its loop built), and
    stopped and awaited on the way out."""
    gw = Gateway(load_config(config))
    task = asyncio.create_task(gw.run())
    try:
        await wait_for(lambda: gw.loop is not None or task.done(), "the gateway to start")
        if task.done():
            task.result()
        yield gw
    finally:
        gw.request_stop()
        await asyncio.wait_for(task, 15)


@contextlib.asynccontextmanager
async def bench(tmp: Path, *, replace: dict[str, str] | None = None, opcua_port: int = 0,
                watchdog_ms: float = 500, extra: str = "", policy: Path = SHIPPED,
                time_scale: float = 1.0) -> AsyncIterator[Bench]:
    twin = Twin("cstr", opcua=("127.0.0.1", opcua_port), modbus=None, watchdog_ms=watchdog_ms, time_scale=time_scale)
    await twin.start()
    config = write_config(tmp, policy=policy, url=twin.opcua_url,
                          replace={r"^cycle_hz = 10.0": "cycle_hz = 20.0", **(replace or {})}, extra=extra)
    try:
        async with running_gateway(config) as gw:
            yield Bench(twin, gw, tmp)
    finally:
        await twin.stop()
    result = verify(tmp / "audit")
    assert result.ok, result.error


async def trip_latch_reset_start(b: Bench, code: str, clear: Callable[[], Awaitable[None]],
                                 *, safe_at_twin: str = "setpoints") -> None:
    """The common story of every trigger: latched ESTOP, safe outputs at the twin, a reset
    that does not resume, a start that does, and the trip in the audit log."""
    await wait_for(lambda: b.mode == "ESTOP", f"the e-stop ({code})", timeout=5)
    assert b.gateway.loop is not None and b.gateway.loop.estop.last is not None
    assert b.gateway.loop.estop.last.code.startswith(code), b.gateway.loop.estop.last
    read = b.twin_setpoints if safe_at_twin == "setpoints" else b.twin_applied
    await wait_for(lambda: read() == (200.0, 0.0), "the safe outputs at the twin", timeout=3)
    await clear()
    async def reset_accepted() -> bool:
        return bool((await b.cmd("reset", reason="fault test")).get("ok"))

    await wait_for(reset_accepted, "an accepted reset", timeout=10)  # refused until cleared
    await asyncio.sleep(0.5)  # ten cycles
    assert b.mode in ("INHIBITED", "READY"), b.mode  # a reset never resumes
    assert b.twin_setpoints() == (200.0, 0.0)
    await wait_for(lambda: b.mode == "READY", "READY after the reset")
    reply = await b.cmd("start")
    assert reply["ok"], reply
    await wait_for(lambda: b.twin_setpoints()[1] == 100.0, "policy actions after the start")
    trips = [r for r in b.audit_records() if r["kind"] == "trip"]
    assert trips and trips[0]["code"].startswith(code)
    modes = [(r["from"], r["to"]) for r in b.audit_records() if r["kind"] == "mode"]
    assert ("AUTO", "ESTOP") in modes and ("ESTOP", "INHIBITED") in modes
