"""A twin: one plant, its PLC logic and both servers, in the caller's asyncio loop.

    twin = Twin("cstr", opcua=("127.0.0.1", 0), modbus=("127.0.0.1", 0))
    await twin.start()
    ... twin.opcua_url, twin.modbus_port, twin.plc.image["T"], twin.plant.set_disturbance(...)
    await twin.stop()

The scan loop runs on absolute deadlines from ``loop.time()``: each scan integrates the
plant over the real time elapsed since the previous one (times ``time_scale``), runs the
PLC logic and publishes changed values to OPC UA (Modbus reads the image live). A late
scan is counted in ``overruns`` and the schedule skips ahead rather than bursting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from edgewarden.gateway.errors import TransportError
from edgewarden.simulators.fault_control import FaultControlServer
from edgewarden.simulators.faults import FaultInjector, FaultProxy
from edgewarden.simulators.image import PlcImage
from edgewarden.simulators.modbus_server import TwinModbusServer, WordOrder
from edgewarden.simulators.opcua_server import OpcUaSecurity, TwinOpcUaServer, _url_host
from edgewarden.simulators.plants import make_plant
from edgewarden.simulators.plants.base import PlantModel
from edgewarden.simulators.plc import Plc

log = logging.getLogger(__name__)


class Twin:
    """Plant + PLC + OPC UA server (+ Modbus server unless ``modbus`` is None)."""

    def __init__(
        self,
        plant: str = "cstr",
        opcua: tuple[str, int] = ("127.0.0.1", 0),
        modbus: tuple[str, int] | None = ("127.0.0.1", 0),
        scan_ms: float = 10.0,
        watchdog_ms: float = 500.0,
        seed: int = 0,
        *,
        time_scale: float = 1.0,
        word_order: WordOrder = "big",
        modbus_unit_255: bool = False,
        verbose: bool = False,
        plant_kwargs: dict[str, Any] | None = None,
        faults: bool = False,
        control: tuple[str, int] | None = None,
        security: OpcUaSecurity | None = None,
    ) -> None:
        if scan_ms <= 0:
            raise ValueError("scan_ms must be > 0")
        self.name = plant
        self.plant: PlantModel = make_plant(plant, seed=seed, **(plant_kwargs or {}))
        self.plc = Plc(self.plant, watchdog_ms=watchdog_ms, time_scale=time_scale)
        self.scan_s = scan_ms / 1000.0
        # With faults, each server binds an internal ephemeral port and a FaultProxy
        # listens on the public address (see edgewarden.simulators.faults).
        self.faults = FaultInjector(self.plant.spec.observation_names(), seed=seed)
        self.plc.faults = self.faults
        self.proxies: dict[str, FaultProxy] = {}
        op_bind = (opcua[0], 0) if faults else opcua
        self.opcua = TwinOpcUaServer(self.plc.image, plant, op_bind[0], op_bind[1],
                                     verbose=verbose, security=security)
        self.modbus = None
        if modbus is not None:
            mb_bind = (modbus[0], 0) if faults else modbus
            self.modbus = TwinModbusServer(self.plc.image, mb_bind[0], mb_bind[1],
                                           word_order=word_order, verbose=verbose, unit_255=modbus_unit_255)
        if faults:
            self.proxies["opcua"] = FaultProxy("opcua", opcua[0], opcua[1],
                                               lambda: (op_bind[0], self.opcua.port or 0))
            if modbus is not None:
                self.proxies["modbus"] = FaultProxy(
                    "modbus", modbus[0], modbus[1],
                    lambda: (modbus[0], self.modbus.port if self.modbus else 0))
        self.faults.proxies = self.proxies
        self.faults.restarters["opcua"] = self._restart_opcua
        if self.modbus is not None:
            self.faults.restarters["modbus"] = self.modbus.restart
        self.control = FaultControlServer(self, *control) if control is not None else None
        self.overruns = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def image(self) -> PlcImage:
        return self.plc.image

    @property
    def opcua_url(self) -> str:
        proxy = self.proxies.get("opcua")
        if proxy is not None:
            return f"opc.tcp://{_url_host(proxy.host)}:{proxy.port}"
        return self.opcua.url

    @property
    def modbus_host(self) -> str | None:
        return self.modbus.host if self.modbus is not None else None

    @property
    def modbus_port(self) -> int | None:
        proxy = self.proxies.get("modbus")
        if proxy is not None:
            return proxy.port
        return self.modbus.port if self.modbus is not None else None

    @property
    def control_port(self) -> int | None:
        return self.control.port if self.control is not None else None

    async def _restart_opcua(self) -> None:
        await self.opcua.restart()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Bind both servers (TransportError if an address is unavailable), start scanning."""
        if self._task is not None:
            raise RuntimeError("twin already started")
        loop = asyncio.get_running_loop()
        self.plc.scan(loop.time())
        try:
            for proxy in self.proxies.values():  # the public ports: fail fast
                try:
                    await proxy.start()
                except OSError as exc:
                    raise TransportError(f"cannot serve {proxy.name} on {proxy.host}:"
                                         f"{proxy._requested_port}: {exc.strerror or exc}"
                                         ) from None
            if "opcua" in self.proxies:
                self.opcua.advertise_url = self.opcua_url
            if self.control is not None:
                await self.control.start()
            if self.modbus is not None:  # cheap to bind: fail fast before the OPC UA start
                await self.modbus.start()
            await self.opcua.start()
        except BaseException:
            await self._close_servers()
            raise
        self._task = asyncio.create_task(self._run(), name=f"twin-{self.name}-scan")

    async def stop(self) -> None:
        """Stop scanning, then close the servers. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # a scan that crashed was logged when it did; the servers still get closed
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._close_servers()

    async def _close_servers(self) -> None:
        for proxy in self.proxies.values():
            await proxy.stop()
        if self.control is not None:
            await self.control.stop()
        if self.modbus is not None:
            await self.modbus.stop()
        await self.opcua.stop()

    async def __aenter__(self) -> Twin:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        period = self.scan_s
        deadline = loop.time()
        while True:
            deadline += period
            now = loop.time()
            if deadline > now:
                await asyncio.sleep(deadline - now)
            else:
                self.overruns += 1
                if now - deadline > period:  # more than a period behind: skip ahead
                    deadline = now
                await asyncio.sleep(0)
            try:
                self.plc.scan(loop.time())
            except Exception:  # the PLC is dead: say so; clients see stale values
                log.exception("twin %s: PLC scan failed; scanning stopped", self.name)
                raise
            try:
                await self.opcua.publish()
            except Exception:  # a publish glitch must not stop the PLC
                log.exception("OPC UA publish failed")
