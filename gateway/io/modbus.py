"""Modbus TCP transport (pymodbus): planned block reads, checked writes, per-device isolation.

At start every readable tag of a Modbus connection is placed in a read block: tags of the
same unit id and table whose registers (or bits) touch or overlap are merged into one
request of at most ``max_block`` registers. Gaps are never bridged, so an unmapped
address between two tags cannot turn a good block into an ILLEGAL_ADDRESS answer.

Each connection (one TCP or TLS socket) is read by its own task; all connections are read
concurrently and each request is bounded by the cycle's deadline and by the connection's
``timeout_s`` (times ``1 + retries``), so a dead or hung device costs the cycle at most
its I/O budget, and never the other devices their values. A request abandoned at the
cycle's deadline keeps the socket (pymodbus skips a late answer by its transaction id)
until the device has answered nothing for ``timeout_s``. A Modbus exception response
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
import random
import ssl
import struct
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pymodbus.client import AsyncModbusTcpClient, AsyncModbusTlsClient
from pymodbus.exceptions import ModbusException

from gateway.config import MODBUS_REGISTERS, ModbusConnection, TagSpec
from gateway.errors import TransportError
from gateway.io.tags import Quality, Snapshot, TagMap, as_index
from gateway.io.transport import (LinkHealth, WriteError, WritePlan, bounded, check_write, merge_outcomes,
                                  write_error)

_COMMS_ERRORS = (OSError, TimeoutError, asyncio.TimeoutError, ConnectionError, ModbusException)

# struct format (big-endian, after word/byte reordering) and size in registers
_FORMAT: dict[str, tuple[str, int]] = {
    name: (fmt, MODBUS_REGISTERS[name]) for name, fmt in (
        ("int16", ">h"), ("uint16", ">H"), ("int32", ">i"), ("uint32", ">I"),
        ("float32", ">f"), ("float", ">f"), ("double", ">d"), ("bool", ">H"))
}
_INT_BITS = {"int16": 16, "uint16": 16, "int32": 32, "uint32": 32}
_ONE_REGISTER = {"int16": -0x8000, "uint16": 0}  # lowest value of the 16-bit integer types
_EXCEPTION_NAMES = {1: "ILLEGAL_FUNCTION", 2: "ILLEGAL_ADDRESS", 3: "ILLEGAL_VALUE", 4: "DEVICE_FAILURE",
                    5: "ACKNOWLEDGE", 6: "DEVICE_BUSY", 10: "GATEWAY_PATH_UNAVAILABLE",
                    11: "GATEWAY_TARGET_NO_RESPONSE"}
_BIT_TABLES = ("coil", "discrete")


def width(spec: TagSpec) -> int:
    """Registers (or bits, for coil/discrete tables) one tag occupies."""
    return 1 if spec.table in _BIT_TABLES else _FORMAT[spec.datatype][1]


def encode(spec: TagSpec, raw: float) -> list[int]:
    """The raw number to registers (lowest address first)."""
    if spec.datatype in _ONE_REGISTER and spec.byte_order == "big":  # the common case, per cycle
        value = int(round(raw))
        low = _ONE_REGISTER[spec.datatype]
        if low <= value <= low + 0xFFFF:
            return [value & 0xFFFF]
        # out of its range: refused or wrapped by the general path
    return encode_general(spec, raw)


def encode_general(spec: TagSpec, raw: float) -> list[int]:
    """:func:`encode` for every type, word and byte order (struct)."""
    fmt, _ = _FORMAT[spec.datatype]
    if spec.datatype == "bool":
        value: float | int = 1 if raw else 0
    elif spec.datatype in _INT_BITS:
        value = int(round(raw))
        bits = _INT_BITS[spec.datatype]
        signed = not spec.datatype.startswith("u")
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        if not lo <= value <= hi:
            if spec.range is not None:
                raise TransportError(f"value {value} does not fit {spec.datatype}")
            value %= 1 << bits  # a counter without a range wraps (the heartbeat)
            if signed and value > hi:
                value -= 1 << bits
    else:
        value = float(raw)
    data = struct.pack(fmt, value)
    words = [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]
    if spec.byte_order == "little":
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    if spec.word_order == "little":
        words.reverse()
    return words


def _byteswap_fix(spec: TagSpec, regs: Sequence[int]) -> list[int]:
    return [((w & 0xFF) << 8) | (w >> 8) for w in regs] if spec.byte_order == "little" else list(regs)


def decode(spec: TagSpec, regs: Sequence[int]) -> float:
    """Registers as read (lowest address first) to the raw number, honouring word and byte order."""
    words = _byteswap_fix(spec, regs)
    if spec.word_order == "little":
        words.reverse()
    raw = b"".join(w.to_bytes(2, "big") for w in words)
    value = struct.unpack(_FORMAT[spec.datatype][0], raw)[0]
    return float(bool(value)) if spec.datatype == "bool" else float(value)


@dataclass
class _Block:
    """One read request: a unit id, a table and a contiguous address range."""

    unit: int
    table: str
    start: int
    count: int
    slots: list[int] = field(default_factory=list)
    specs: list[TagSpec] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    # filled by finish(): the hot path's precomputed pieces
    slot_arr: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.intp))
    scale: np.ndarray = field(default_factory=lambda: np.empty(0))
    offset: np.ndarray = field(default_factory=lambda: np.empty(0))
    unpack: list[tuple[struct.Struct, int, bool] | None] = field(default_factory=list)
    buf_fmt: str = ""
    # the whole block in one struct (pad bytes between tags) where every tag is big-endian,
    # a register type and tags do not overlap; None: per-tag decoding
    whole: struct.Struct | None = None
    bools: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.intp))
    index: slice | np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.intp))
    good: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint8))
    floats: bool = False

    def finish(self) -> None:
        self.slot_arr = np.array(self.slots, dtype=np.intp)
        self.index = as_index(self.slot_arr)
        self.scale = np.array([s.scale for s in self.specs])
        self.offset = np.array([s.offset for s in self.specs])
        self.good = np.full(len(self.slots), Quality.GOOD, dtype=np.uint8)
        self.buf_fmt = f">{self.count}H"
        self.whole = self._compile()
        self.bools = np.array([i for i, s in enumerate(self.specs) if s.datatype == "bool"], dtype=np.intp)
        self.floats = any(s.datatype in ("float32", "float", "double") for s in self.specs)
        self.unpack = []
        for spec, off in zip(self.specs, self.offsets, strict=True):
            if spec.table in _BIT_TABLES or spec.word_order != "big" or spec.byte_order != "big":
                self.unpack.append(None)  # general path: decode()
            else:
                self.unpack.append((struct.Struct(_FORMAT[spec.datatype][0]), 2 * off, spec.datatype == "bool"))

    def _compile(self) -> struct.Struct | None:
        if self.table in _BIT_TABLES:
            return None
        fmt, at = ">", 0
        for spec, off in zip(self.specs, self.offsets, strict=True):
            if spec.word_order != "big" or spec.byte_order != "big" or off < at:
                return None
            fmt += f"{2 * (off - at)}x" if off > at else ""
            code, size = _FORMAT[spec.datatype]
            fmt += code[1:]
            at = off + size
        return struct.Struct(fmt + (f"{2 * (self.count - at)}x" if self.count > at else ""))


def plan_blocks(specs: dict[str, TagSpec], names: Sequence[str], slots: Sequence[int],
                max_block: int) -> list[_Block]:
    """Merge tags into contiguous read blocks per (unit, table); never bridge a gap."""
    items = sorted(zip(names, slots, strict=True),
                   key=lambda it: (specs[it[0]].unit, specs[it[0]].table or "", specs[it[0]].address or 0))
    blocks: list[_Block] = []
    for name, slot in items:
        spec = specs[name]
        assert spec.table is not None and spec.address is not None
        end = spec.address + width(spec)
        cap = 2000 if spec.table in _BIT_TABLES else max_block
        last = blocks[-1] if blocks else None
        if (last is not None and last.unit == spec.unit and last.table == spec.table
                and spec.address <= last.start + last.count and max(end, last.start + last.count) - last.start <= cap):
            last.count = max(end, last.start + last.count) - last.start
        else:
            last = _Block(unit=spec.unit, table=spec.table, start=spec.address, count=end - spec.address)
            blocks.append(last)
        last.slots.append(slot)
        last.specs.append(spec)
        last.offsets.append(spec.address - last.start)
    for block in blocks:
        block.finish()
    return blocks


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]


def exception_name(code: int) -> str:
    return f"{_EXCEPTION_NAMES.get(code, 'EXCEPTION')} ({code})"


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
    unit: int
    table: str
    address: int
    positions: list[int]  # indices into the plan
    specs: list[TagSpec]
    # per tag, read from the config once: (position, offset, scale, lowest value of a
    # big-endian 16-bit integer type, else None: encoded by encode_general's rules)
    coded: list[tuple[int, float, float, int | None]] = field(default_factory=list)

    def finish(self) -> None:
        self.coded = [(i, s.offset, s.scale, _ONE_REGISTER.get(s.datatype) if s.byte_order == "big" else None)
                      for i, s in zip(self.positions, self.specs, strict=True)]

    def registers(self, plan: WritePlan, values: Sequence[float]) -> list[int]:
        """The registers of a holding write, as :func:`encode` makes them."""
        regs: list[int] = []
        for k, (i, offset, scale, low) in enumerate(self.coded):
            raw = (values[i] - offset) / scale
            if low is not None:  # the common case: one 16-bit register
                value = int(round(raw))
                if low <= value <= low + 0xFFFF:
                    regs.append(value & 0xFFFF)
                    continue
            try:
                regs.extend(encode(self.specs[k], raw))
            except (struct.error, TransportError) as exc:
                raise TransportError(f"refused write of {values[i]} to tag {plan.names[i]!r}: "
                                     f"{_describe(exc)}") from None
        return regs


@dataclass
class _Link:
    name: str
    spec: ModbusConnection
    blocks: list[_Block]
    all_slots: np.ndarray
    client: AsyncModbusTcpClient | None = None
    health: LinkHealth = field(default_factory=LinkHealth)
    reconnect_task: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    backoff_s: float = 0.0  # next reconnect wait; back to reconnect_min_s only after a good read
    answered_mono: float = -float("inf")  # the device's last answer (or the socket's start)

    @property
    def request_timeout(self) -> float:
        return self.spec.timeout_s * (1 + self.spec.retries) + 0.05


class ModbusTransport:
    """The Transport for every connection of type ``modbus``."""

    def __init__(self, tags: TagMap, connections: dict[str, ModbusConnection]) -> None:
        self._tags = tags
        self._links: dict[str, _Link] = {}
        for name, spec in connections.items():
            names = [t for t in tags.readable if tags.specs[t].connection == name]
            slots = [tags.index[t] for t in names]
            self._links[name] = _Link(name=name, spec=spec,
                                      blocks=plan_blocks(tags.specs, names, slots, spec.max_block),
                                      all_slots=np.array(slots, dtype=np.intp))
        self._write_cache: dict[tuple[str, ...], list[tuple[_Link, list[_WriteOp]]]] = {}
        self._closing = False
        self._log = logging.getLogger("edgewarden.modbus")

    def blocks(self, connection: str) -> list[_Block]:
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
                if not isinstance(res, (*_COMMS_ERRORS, ssl.SSLError)):
                    raise res
                raise TransportError(
                    f"cannot reach Modbus connection {link.name!r} at {link.spec.host}:{link.spec.port}: "
                    f"{_describe(res)}. Check that the device is running and host and port in "
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
                                     f"{_describe(exc)}") from None
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
        link.client = client
        link.answered_mono = time.monotonic()
        link.health.connected = True
        link.health.state = "up"
        link.health.last_error = ""

    def _drop(self, link: _Link, exc: BaseException | str) -> None:
        link.health.connected = False
        link.health.state = "closed" if self._closing else "reconnecting"
        link.health.last_error = exc if isinstance(exc, str) else _describe(exc)
        client, link.client = link.client, None
        if client is not None:
            client.close()
        if not self._closing and (link.reconnect_task is None or link.reconnect_task.done()):
            link.reconnect_task = asyncio.create_task(self._reconnect(link), name=f"reconnect-{link.name}")

    async def _reconnect(self, link: _Link) -> None:
        # A device that accepts TCP but never answers would otherwise reconnect at the
        # minimum delay forever: the backoff only resets after a good read.
        delay = max(link.backoff_s, link.spec.reconnect_min_s)
        while not self._closing:
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2.0, link.spec.reconnect_max_s)
            link.backoff_s = delay
            try:
                await self._open(link)
            except (*_COMMS_ERRORS, ssl.SSLError, TransportError) as exc:
                link.health.last_error = _describe(exc)
                continue
            link.health.reconnects += 1
            self._log.warning("reconnected to %s (%s:%s)", link.name, link.spec.host, link.spec.port)
            return

    async def close(self) -> None:
        self._closing = True
        for link in self._links.values():
            if link.reconnect_task is not None:
                link.reconnect_task.cancel()
            if link.client is not None:
                link.client.close()
                link.client = None
            link.health.connected = False
            link.health.state = "closed"

    def health(self) -> dict[str, LinkHealth]:
        return {name: link.health for name, link in self._links.items()}

    def _late(self, link: _Link) -> None:
        """No answer by the cycle's deadline: keep the socket unless the device has
        answered nothing for its own timeout (then drop it and reconnect)."""
        if time.monotonic() - link.answered_mono >= link.request_timeout:
            self._drop(link, f"no answer for {link.request_timeout:g} s")
        else:
            link.health.late += 1
            link.health.last_error = "no answer by the cycle's deadline"

    # ---- reads -------------------------------------------------------------------
    async def read(self, snap: Snapshot, deadline: float | None = None) -> None:
        if len(self._links) == 1:
            await self._read_link(next(iter(self._links.values())), snap, deadline)
        else:
            await asyncio.gather(*(self._read_link(link, snap, deadline) for link in self._links.values()))

    @staticmethod
    def _request(client: AsyncModbusTcpClient, block: _Block) -> Awaitable[Any]:
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
        async with link.lock:
            try:
                # pymodbus bounds each request (timeout_s, retries); this backstop bounds them
                # all, with one timer per cycle instead of one per request
                async with bounded(deadline, link.request_timeout * len(link.blocks)):
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
                            continue
                        self._fill(snap, block, rr, now, time.time())
            except TimeoutError:
                snap.mark(link.all_slots, Quality.NO_DATA)
                self._late(link)
                return
            except _COMMS_ERRORS as exc:
                snap.mark(link.all_slots, Quality.NO_DATA)
                self._drop(link, exc)
                return
        now = time.monotonic()
        link.health.rtt_s = (now - t0) / max(1, len(link.blocks))
        link.health.last_ok_mono = now
        link.backoff_s = 0.0

    @staticmethod
    def _fill(snap: Snapshot, block: _Block, rr: object, now: float, wall: float) -> None:
        whole = block.whole
        if whole is None:
            ModbusTransport._fill_each(snap, block, rr, now, wall)
            return
        regs = rr.registers  # type: ignore[attr-defined]
        values = np.array(whole.unpack(struct.pack(block.buf_fmt, *regs[:block.count])), dtype=float)
        if len(block.bools):
            values[block.bools] = values[block.bools] != 0
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

    @staticmethod
    def _fill_each(snap: Snapshot, block: _Block, rr: object, now: float, wall: float) -> None:
        if block.table in _BIT_TABLES:
            bits = rr.bits  # type: ignore[attr-defined]
            raw = [1.0 if bits[off] else 0.0 for off in block.offsets]
        else:
            regs = rr.registers  # type: ignore[attr-defined]
            buf = struct.pack(block.buf_fmt, *regs[:block.count])
            raw = []
            for spec, off, fast in zip(block.specs, block.offsets, block.unpack, strict=True):
                if fast is None:
                    raw.append(decode(spec, regs[off:off + width(spec)]))
                else:
                    v = fast[0].unpack_from(buf, fast[1])[0]
                    raw.append(float(bool(v)) if fast[2] else float(v))
        values = np.array(raw) * block.scale + block.offset
        slots = block.slot_arr
        snap.values[slots] = values
        snap.quality[slots] = np.where(np.isnan(values), Quality.BAD, Quality.GOOD)
        snap.source_ts[slots] = wall
        snap.recv_mono[slots] = now

    # ---- writes ------------------------------------------------------------------
    def _plan(self, plan: WritePlan) -> list[tuple[_Link, list[_WriteOp]]]:
        groups = self._write_cache.get(plan.names)
        if groups is not None:
            return groups
        by_link: dict[str, list[tuple[int, TagSpec]]] = {}
        for i, spec in enumerate(plan.specs):
            if spec.table not in ("holding", "coil"):
                raise TransportError(f"cannot write tag {plan.names[i]!r}: Modbus {spec.table} is read-only")
            by_link.setdefault(spec.connection, []).append((i, spec))
        groups = []
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
            for op in ops:
                op.finish()
            groups.append((self._links[conn], ops))
        self._write_cache[plan.names] = groups
        return groups

    async def write(self, plan: WritePlan, values: Sequence[float], deadline: float | None = None) -> None:
        check_write(plan, values)
        groups = self._plan(plan)
        if len(groups) == 1:
            await self._write_link(*groups[0], plan, values, deadline)
            return
        results = await asyncio.gather(*(self._write_link(link, ops, plan, values, deadline)
                                         for link, ops in groups), return_exceptions=True)
        error = merge_outcomes(len(plan.names), [([i for op in ops for i in op.positions], r)
                                                 for (_, ops), r in zip(groups, results, strict=True)])
        if error is not None:
            raise error

    async def _write_link(self, link: _Link, ops: list[_WriteOp], plan: WritePlan,
                          values: Sequence[float], deadline: float | None) -> None:
        # encode everything first: a value that does not fit refuses the whole write
        payloads: list[bool | list[int]] = []
        for op in ops:
            if op.table == "coil":
                i, offset, scale, _ = op.coded[0]
                payloads.append(bool((values[i] - offset) / scale))
            else:
                payloads.append(op.registers(plan, values))
        client = link.client
        everything = [i for op in ops for i in op.positions]
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
                async with bounded(deadline, link.request_timeout * len(ops)):  # backstop, as for reads
                    for op, payload in zip(ops, payloads, strict=True):
                        pending = op.positions
                        if op.table == "coil":
                            rr = await client.write_coil(op.address, bool(payload), device_id=op.unit)
                        else:
                            rr = await client.write_registers(op.address, values=payload,  # type: ignore[arg-type]
                                                              device_id=op.unit)
                        link.answered_mono = time.monotonic()
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
            except _COMMS_ERRORS as exc:
                self._drop(link, exc)
                for i in pending:
                    outcomes[i] = f"failed: {_describe(exc)}"
                error = f"write to {link.name!r} failed: {_describe(exc)}"
        if error is not None:
            raise WriteError(error, outcomes)
