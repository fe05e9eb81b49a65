"""Fault injection for twins: sensor faults in the PLC image, network faults in a proxy.

Two families, one :class:`FaultInjector` per twin (``twin.faults``):

**Sensor faults** (``target`` = a Measurements tag; applied by the PLC to the value it
writes into the image, so both servers *and the PLC's own interlocks* see it, as with a
real failing transmitter):

====================  ==================================================================
``freeze``            the value stops at what it was when the fault was injected
``noise``             adds Gaussian noise, std ``sigma`` (units of the tag), seeded
``bias``              adds ``value``
``drift``             adds ``rate`` x seconds since injection
``spike``             with probability ``prob`` per scan adds ``magnitude`` (random sign)
``bad``               quality Bad: OPC UA status BadSensorFailure (last value kept),
                      Modbus float32 NaN / int16 -32768
``uncertain``         quality Uncertain: OPC UA status UncertainSensorNotAccurate
====================  ==================================================================

**Network faults** (``target`` = ``opcua``, ``modbus`` or ``both``; the twin must run with
``faults=True``, which puts a :class:`FaultProxy` on the public port of each server):

====================  ==================================================================
``drop``              closes (aborts) every open client connection, once
``refuse``            stops listening: new connections are refused until cleared
``latency``           delays every server response by ``ms`` milliseconds
``hang``              connections stay open but nothing is answered until cleared
``restart``           stops the server and starts it again (sessions are lost), once
====================  ==================================================================

Every inject and clear is logged (logger ``edgewarden.simulators.faults``, WARNING) and kept in
``history``. A fault with ``duration_s`` clears itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger("edgewarden.simulators.faults")

SENSOR_KINDS = ("freeze", "noise", "bias", "drift", "spike", "bad", "uncertain")
NETWORK_KINDS = ("drop", "refuse", "latency", "hang", "restart")
ONE_SHOT = ("drop", "restart")
PROTOCOLS = ("opcua", "modbus", "both")


@dataclass
class Fault:
    kind: str
    target: str
    value: float = 0.0  # bias
    sigma: float = 0.0  # noise
    rate: float = 0.0  # drift, units per second
    magnitude: float = 0.0  # spike
    prob: float = 0.0  # spike probability per scan
    ms: float = 0.0  # latency
    duration_s: float | None = None
    id: int = 0
    since: float = field(default=0.0)  # wall-clock time of injection
    frozen: float | None = None

    def describe(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if v not in (0.0, None) or k == "id"}
        d.pop("frozen", None)
        return d


class FaultInjector:
    """Holds a twin's active faults; the PLC and the proxies consult it."""

    def __init__(self, measurements: tuple[str, ...], seed: int = 0) -> None:
        self.measurements = measurements
        self._rng = np.random.default_rng(seed)
        self._ids = itertools.count(1)
        self.active: dict[int, Fault] = {}
        self.history: list[tuple[float, str, dict[str, Any]]] = []
        self.proxies: dict[str, FaultProxy] = {}
        self.restarters: dict[str, Callable[[], Awaitable[None]]] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}

    # ---- control ----------------------------------------------------------------------
    async def inject(self, kind: str, target: str, **params: Any) -> Fault:
        """Start a fault; raises ValueError for an unknown kind/target or bad parameters."""
        fault = self._validate(kind, target, params)
        fault.id = next(self._ids)
        fault.since = time.time()
        self._log("inject", fault)
        if kind in SENSOR_KINDS:
            self.active[fault.id] = fault
        else:
            for proto in self._protocols(target):
                await self._network(fault, proto, on=True)
            if kind not in ONE_SHOT:
                self.active[fault.id] = fault
        if fault.id in self.active and fault.duration_s:
            loop = asyncio.get_running_loop()
            self._timers[fault.id] = loop.call_later(
                fault.duration_s, lambda i=fault.id: asyncio.ensure_future(self.clear(i)))
        return fault

    async def clear(self, fault_id: int | None = None) -> list[int]:
        """Clear one fault (or all with None); returns the ids cleared."""
        ids = list(self.active) if fault_id is None else [fault_id]
        if fault_id is not None and fault_id not in self.active:
            raise ValueError(f"no active fault {fault_id}")
        for i in ids:
            fault = self.active.pop(i)
            timer = self._timers.pop(i, None)
            if timer is not None:
                timer.cancel()
            if fault.kind in NETWORK_KINDS:
                for proto in self._protocols(fault.target):
                    await self._network(fault, proto, on=False)
            self._log("clear", fault)
        return ids

    def list(self) -> list[dict[str, Any]]:
        return [f.describe() for f in self.active.values()]

    # ---- the PLC's hook -----------------------------------------------------------------
    def apply(self, name: str, value: float, now: float) -> tuple[float, str]:
        """(value, quality) of measurement ``name`` as the faulty sensor reports it."""
        quality = "good"
        for f in self.active.values():
            if f.target != name:
                continue
            k = f.kind
            if k == "freeze":
                if f.frozen is None:
                    f.frozen = value
                value = f.frozen
            elif k == "noise":
                value += f.sigma * float(self._rng.standard_normal())
            elif k == "bias":
                value += f.value
            elif k == "drift":
                value += f.rate * (now - f.since)
            elif k == "spike":
                if self._rng.random() < f.prob:
                    value += f.magnitude * (1.0 if self._rng.random() < 0.5 else -1.0)
            elif k == "bad":
                quality = "bad"
            elif k == "uncertain" and quality == "good":
                quality = "uncertain"
        return value, quality

    def sensor_faulted(self) -> set[str]:
        return {f.target for f in self.active.values() if f.kind in SENSOR_KINDS}

    # ---- internals ------------------------------------------------------------------------
    def _validate(self, kind: str, target: str, params: dict[str, Any]) -> Fault:
        allowed = {"value", "sigma", "rate", "magnitude", "prob", "ms", "duration_s"}
        unknown = set(params) - allowed
        if unknown:
            raise ValueError(f"unknown fault parameter(s): {', '.join(sorted(unknown))}")
        clean: dict[str, Any] = {}
        for key, v in params.items():
            if v is None:
                continue
            if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
                raise ValueError(f"fault parameter {key} must be a finite number, got {v!r}")
            clean[key] = float(v)
        if kind in SENSOR_KINDS:
            if target not in self.measurements:
                raise ValueError(f"fault {kind}: target must be a measurement "
                                 f"({', '.join(self.measurements)}), got {target!r}")
        elif kind in NETWORK_KINDS:
            if target not in PROTOCOLS:
                raise ValueError(f"fault {kind}: target must be opcua, modbus or both, "
                                 f"got {target!r}")
            for proto in self._protocols(target):
                if kind == "restart" and proto not in self.restarters:
                    raise ValueError(f"fault restart: no {proto} server in this twin")
                if kind != "restart" and proto not in self.proxies:
                    raise ValueError(f"fault {kind} on {proto} needs the twin started with "
                                     "faults enabled (--faults)")
        else:
            raise ValueError(f"unknown fault kind {kind!r} (known: "
                             f"{', '.join(SENSOR_KINDS + NETWORK_KINDS)})")
        if clean.get("prob", 0.0) > 1.0 or clean.get("prob", 0.0) < 0.0:
            raise ValueError("fault parameter prob must be within 0..1")
        if clean.get("ms", 0.0) < 0 or clean.get("sigma", 0.0) < 0:
            raise ValueError("fault parameters ms and sigma must be >= 0")
        if "duration_s" in clean and clean["duration_s"] <= 0:
            raise ValueError("fault parameter duration_s must be > 0")
        return Fault(kind, target, **clean)

    def _protocols(self, target: str) -> list[str]:
        if target != "both":
            return [target]
        return [p for p in ("opcua", "modbus") if p in self.proxies or p in self.restarters]

    async def _network(self, fault: Fault, proto: str, on: bool) -> None:
        kind = fault.kind
        if kind == "restart":
            await self.restarters[proto]()
            return
        proxy = self.proxies[proto]
        if kind == "drop":
            proxy.drop()
        elif kind == "refuse":
            await proxy.set_refuse(on)
        elif kind == "latency":
            proxy.latency_s = fault.ms / 1000.0 if on else 0.0
        elif kind == "hang":
            proxy.set_hang(on)

    def _log(self, what: str, fault: Fault) -> None:
        info = fault.describe()
        self.history.append((time.time(), what, info))
        log.warning("fault %s: %s", what, " ".join(f"{k}={v}" for k, v in info.items()))


class FaultProxy:
    """A TCP relay on a server's public port that can drop, refuse, delay or hang."""

    def __init__(self, name: str, host: str, port: int,
                 upstream: Callable[[], tuple[str, int]]) -> None:
        self.name = name
        self.host = host
        self._requested_port = port
        self.port: int | None = None
        self._upstream = upstream
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.latency_s = 0.0
        self._running = asyncio.Event()
        self._running.set()

    async def start(self) -> None:
        port = self.port if self.port is not None else self._requested_port
        self._server = await asyncio.start_server(self._accept, self.host, port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        self._running.set()
        if self._server is not None:
            self._server.close()
            self._server = None
        self.drop()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def drop(self) -> None:
        for w in list(self._conns):
            w.transport.abort()
        self._conns.clear()

    async def set_refuse(self, on: bool) -> None:
        if on and self._server is not None:
            self._server.close()
            self._server = None
        elif not on and self._server is None:
            await self.start()

    def set_hang(self, on: bool) -> None:
        if on:
            self._running.clear()
        else:
            self._running.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            host, port = self._upstream()
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.transport.abort()
            return
        self._conns |= {writer, up_writer}
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await asyncio.gather(self._pump(reader, up_writer, delay=False),
                                 self._pump(up_reader, writer, delay=True))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (writer, up_writer):
                self._conns.discard(w)
                w.transport.abort()
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    delay: bool) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                await self._running.wait()  # hang: hold everything
                if delay and self.latency_s > 0:
                    await asyncio.sleep(self.latency_s)
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()
