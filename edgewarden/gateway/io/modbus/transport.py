"""Modbus TCP transport (pymodbus): planned block reads, checked writes, per-device isolation.

At start every readable tag of a Modbus connection is placed in a read block: tags of the
same unit id and table whose registers (or bits) touch or overlap are merged into one
request of at most ``max_block`` registers. Gaps are never bridged, so an unmapped
address between two tags cannot turn a good block into an ILLEGAL_ADDRESS answer.

Each connection (one TCP or TLS socket) is read by its own task; all connections are read
concurrently; the cycle waits for each until its deadline and a read goes on past it
(edgewarden/gateway/io/link.py), bounded by the connection's ``timeout_s`` (times ``1 + retries``),
so a dead or hung device costs the cycle at most its I/O budget, and never the other
devices their values. The socket is kept until the device has answered nothing for
``timeout_s``. A Modbus exception response
marks that block's tags BAD; a timeout or a lost socket marks the whole connection
NO_DATA, drops the socket and reconnects in the background with capped exponential
backoff and jitter. A write reports per tag what happened (``WriteError.outcomes``).

Modbus carries no timestamps: the source timestamp of a value is the gateway's wall
clock when the response arrived.

TLS: the SSL context is built here with ``CERT_REQUIRED`` and host-name checking against
``ca_file`` (pymodbus' own helper turns verification off).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pymodbus.client import AsyncModbusTcpClient, AsyncModbusTlsClient
from pymodbus.exceptions import ModbusException

from edgewarden.gateway.config import TagSpec
from edgewarden.gateway.errors import ProtocolError, TransportError
from edgewarden.gateway.io.link import Link, LinkedTransport, WritePart, describe
from edgewarden.gateway.io.modbus.codec import WRITE_FUNCTION, Block, check_reply, encode, exception_name, plan_blocks
from edgewarden.gateway.io.modbus.connection import ModbusConnection, width
from edgewarden.gateway.io.tags import Quality, Snapshot, TagMap, as_index
from edgewarden.gateway.io.transport import WriteError, WritePlan, bounded, write_error

_COMMS_ERRORS = (OSError, TimeoutError, asyncio.TimeoutError, ConnectionError, ModbusException)


def tls_context(spec: ModbusConnection) -> ssl.SSLContext:
    """A client context that verifies the server against ca_file and checks its host name."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(spec.ca_file))
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if spec.certificate is not None:
        ctx.load_cert_chain(str(spec.certificate), str(spec.private_key))
    return ctx


@dataclass
class _WriteOp:
    """One write request: a coil, or a run of contiguous holding registers."""

    unit: int
    table: str
    address: int
    positions: list[int]  # indices into the plan
    specs: list[TagSpec]

    def payload(self, plan: WritePlan, values: Sequence[float]) -> bool | list[int]:
        """The coil's state, or the registers of a holding write; refuses a value that does not fit."""
        if self.table == "coil":
            spec = self.specs[0]
            return bool((values[self.positions[0]] - spec.offset) / spec.scale)
        regs: list[int] = []
        for i, spec in zip(self.positions, self.specs, strict=True):
            try:
                regs.extend(encode(spec, (values[i] - spec.offset) / spec.scale))
            except TransportError as exc:
                raise TransportError(f"refused write of {values[i]} to tag {plan.names[i]!r}: {exc}") from None
        return regs


@dataclass(kw_only=True)
class _Link(Link):
    spec: ModbusConnection
    blocks: list[Block]
    all_slots: np.ndarray
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def silence_s(self) -> float:
        """pymodbus' own bound on one request (its timeout, times the attempts)."""
        return self.spec.timeout_s * (1 + self.spec.retries) + 0.05


class ModbusTransport(LinkedTransport[_Link]):
    """The Transport for every connection of type ``modbus``."""

    comms_errors = (*_COMMS_ERRORS, ssl.SSLError)

    def __init__(self, tags: TagMap, connections: dict[str, ModbusConnection], *, read_only: bool = False,
                 period_s: float | None = None) -> None:
        super().__init__("edgewarden.modbus", read_only=read_only, period_s=period_s)
        for name, spec in connections.items():
            names = [t for t in tags.readable if tags.specs[t].connection == name]
            slots = [tags.index[t] for t in names]
            self._links[name] = _Link(name=name, spec=spec,
                                      blocks=plan_blocks(tags.specs, names, slots, spec.max_block),
                                      all_slots=np.array(slots, dtype=np.intp))
            self._overlap(self._links[name], len(tags.readable), as_index(np.array(slots, dtype=np.intp)))

    def blocks(self, connection: str) -> list[Block]:
        """The planned read requests of one connection (for tests and diagnostics)."""
        return self._links[connection].blocks

    # ---- connection management ---------------------------------------------------
    async def connect(self) -> None:
        """Connect every link; an unreachable device at start is a clear error."""
        results = await asyncio.gather(*(self._open(link) for link in self._links.values()),
                                       return_exceptions=True)
        for link, res in zip(self._links.values(), results, strict=True):
            if isinstance(res, BaseException):
                await self.close()
                if isinstance(res, TransportError):
                    raise res
                if not isinstance(res, self.comms_errors):
                    raise res
                raise TransportError(
                    f"cannot reach Modbus connection {link.name!r} at {link.spec.host}:{link.spec.port}: "
                    f"{describe(res)}. Check that the device is running and host and port in "
                    f"[connections.{link.name}] are right.") from None

    async def _open(self, link: _Link) -> None:
        spec = link.spec
        kw = {"port": spec.port, "timeout": spec.timeout_s, "retries": spec.retries, "reconnect_delay": 0,
              "name": link.name}
        if spec.tls:
            try:
                ctx = tls_context(spec)
            except (OSError, ssl.SSLError) as exc:
                raise TransportError(f"Modbus connection {link.name!r}: cannot load TLS files: "
                                     f"{describe(exc)}") from None
            client: AsyncModbusTcpClient = AsyncModbusTlsClient(spec.host, sslctx=ctx, **kw)  # type: ignore[arg-type]
        else:
            client = AsyncModbusTcpClient(spec.host, **kw)  # type: ignore[arg-type]
        logging.getLogger("pymodbus.logging").setLevel(logging.CRITICAL)
        try:
            ok = await asyncio.wait_for(client.connect(), timeout=spec.timeout_s + 0.5)
        except BaseException:
            client.close()
            raise
        if not ok:
            client.close()
            raise ConnectionRefusedError(f"no connection to {spec.host}:{spec.port}"
                                         + (" (TLS handshake or certificate verification failed?)"
                                            if spec.tls else ""))
        link.opened(client)

    async def _dispose(self, client: AsyncModbusTcpClient) -> None:
        client.close()

    # ---- reads -------------------------------------------------------------------
    @staticmethod
    def _request(client: AsyncModbusTcpClient, block: Block) -> Awaitable[Any]:
        if block.table == "holding":
            return client.read_holding_registers(block.start, count=block.count, device_id=block.unit)
        if block.table == "input":
            return client.read_input_registers(block.start, count=block.count, device_id=block.unit)
        if block.table == "coil":
            return client.read_coils(block.start, count=block.count, device_id=block.unit)
        return client.read_discrete_inputs(block.start, count=block.count, device_id=block.unit)

    async def _read_link(self, link: _Link, snap: Snapshot, deadline: float | None) -> None:
        client = link.client
        if client is None:
            snap.mark(link.all_slots, Quality.NO_DATA)
            return
        t0 = time.monotonic()
        clean = True
        async with link.lock:
            try:
                # pymodbus bounds each request (timeout_s, retries); this backstop bounds them
                # all, with one timer per cycle instead of one per request
                async with bounded(deadline, link.silence_s * len(link.blocks)):
                    for block in link.blocks:
                        rr = await self._request(client, block)
                        now = time.monotonic()
                        link.answered_mono = now
                        if rr.isError():
                            code = getattr(rr, "exception_code", 0)
                            link.health.last_error = (f"unit {block.unit} {block.table} {block.start}+{block.count}: "
                                                      f"{exception_name(code)}")
                            snap.mark(block.slot_arr, Quality.BAD)
                            snap.recv_mono[block.slot_arr] = now
                            clean = False
                            continue
                        self._fill(snap, block, rr, now, time.time())
            except (*_COMMS_ERRORS, ProtocolError) as exc:  # TimeoutError among them: late, not dropped
                self._read_failed(link, snap, link.all_slots, exc)
                return
        now = time.monotonic()
        link.answered(now, clean=clean)
        link.health.rtt_s = (now - t0) / max(1, len(link.blocks))

    @staticmethod
    def _fill(snap: Snapshot, block: Block, response: object, now: float, wall: float) -> None:
        values = block.raw(response)
        values *= block.scale
        values += block.offset
        idx = block.index
        snap.values[idx] = values
        if block.floats:  # a NaN register pattern is bad data
            snap.quality[idx] = np.where(np.isnan(values), Quality.BAD, Quality.GOOD)
        else:
            snap.quality[idx] = block.good
        snap.source_ts[idx] = wall
        snap.recv_mono[idx] = now

    # ---- writes ------------------------------------------------------------------
    def _plan(self, plan: WritePlan) -> list[WritePart]:
        by_link: dict[str, list[tuple[int, TagSpec]]] = {}
        for i, spec in enumerate(plan.specs):
            if spec.table not in ("holding", "coil"):
                raise TransportError(f"cannot write tag {plan.names[i]!r}: Modbus {spec.table} is read-only")
            by_link.setdefault(spec.connection, []).append((i, spec))
        groups: list[WritePart] = []
        for conn, items in by_link.items():
            items.sort(key=lambda it: (it[1].unit, it[1].table or "", it[1].address or 0))
            ops: list[_WriteOp] = []
            for i, spec in items:
                assert spec.address is not None and spec.table is not None
                last = ops[-1] if ops else None
                if (last is not None and last.table == "holding" == spec.table and last.unit == spec.unit
                        and last.address + sum(width(s) for s in last.specs) == spec.address
                        and sum(width(s) for s in last.specs) + width(spec) <= 123):
                    last.positions.append(i)
                    last.specs.append(spec)
                else:
                    ops.append(_WriteOp(spec.unit, spec.table, spec.address, [i], [spec]))
            groups.append(WritePart(self._links[conn], [i for op in ops for i in op.positions], ops))
        return groups

    async def _write_part(self, part: WritePart, plan: WritePlan, values: Sequence[float],
                          deadline: float | None) -> None:
        link, ops, everything = part.link, part.prepared, part.positions
        # encode everything first: a value that does not fit refuses the whole write
        payloads = [op.payload(plan, values) for op in ops]
        client = link.client
        if client is None:
            raise write_error(plan, everything, "not_attempted: not connected",
                              f"cannot write to {link.name!r}: not connected ({link.health.last_error})")
        # each op's tags: acknowledged, refused, sent without an answer, or never sent
        outcomes = ["ok"] * len(plan.names)
        for i in everything:
            outcomes[i] = "not_attempted: an earlier request of this write failed"
        error: str | None = None
        pending: list[int] = []
        async with link.lock:
            try:
                async with bounded(deadline, link.silence_s * len(ops)):  # backstop, as for reads
                    for op, payload in zip(ops, payloads, strict=True):
                        pending = op.positions
                        if op.table == "coil":
                            rr = await client.write_coil(op.address, bool(payload), device_id=op.unit)
                        else:
                            rr = await client.write_registers(op.address, values=payload,  # type: ignore[arg-type]
                                                              device_id=op.unit)
                        link.answered_mono = time.monotonic()
                        if not rr.isError():  # an answer of another shape is a fault of the link
                            check_reply(rr, WRITE_FUNCTION[op.table], 0, False,
                                        f"unit {op.unit} {op.table} {op.address} write")
                        if rr.isError():
                            names = [plan.names[i] for i in op.positions]
                            exc_name = exception_name(getattr(rr, 'exception_code', 0))
                            error = error or (f"Modbus device {link.name!r} (unit {op.unit}) refused the write "
                                              f"of {names}: {exc_name}")
                            for i in op.positions:
                                outcomes[i] = f"failed: {exc_name}"
                        else:
                            for i in op.positions:
                                outcomes[i] = "ok"
                        pending = []
            except TimeoutError:
                self._late(link)
                for i in pending:
                    outcomes[i] = "timeout"
                error = f"write to {link.name!r}: no acknowledgement by the deadline"
            except (*_COMMS_ERRORS, ProtocolError) as exc:
                self._drop(link, exc)
                for i in pending:
                    outcomes[i] = f"failed: {describe(exc)}"
                error = f"write to {link.name!r} failed: {describe(exc)}"
        if error is not None:
            if error.startswith("Modbus device"):  # answered with an exception: refused, not lost
                self._refused(link, error)
            raise WriteError(error, outcomes)
