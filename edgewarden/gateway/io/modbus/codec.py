"""Modbus registers to and from engineering units, and the read-block planner.

:func:`encode` and :func:`decode` are the reference codec, on pymodbus'
``convert_to_registers`` / ``convert_from_registers`` (which know the word order), plus
the byte order inside each register, which pymodbus does not handle. Two fast paths are
kept, each beside its reference and tested equal to it (tests/unit/io/test_io_fill.py,
tests/unit/io/test_io_units.py): a one-register integer in :func:`encode` (every heartbeat
and most setpoints), and a read block of register tags that do not overlap, which
:class:`Block` decodes with one precompiled struct (words reordered and bytes swapped
first where a tag's word or byte order is little). Overlapping tags and bit tables go
through the reference.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pymodbus.client.mixin import ModbusClientMixin

from edgewarden.gateway.config import TagSpec
from edgewarden.gateway.errors import ProtocolError, TransportError
from edgewarden.gateway.io.modbus.connection import BIT_TABLES, MODBUS_REGISTERS, width
from edgewarden.gateway.io.tags import Quality, as_index

_TYPE = ModbusClientMixin.DATATYPE
_DATATYPE = {"int16": _TYPE.INT16, "uint16": _TYPE.UINT16, "int32": _TYPE.INT32, "uint32": _TYPE.UINT32,
             "float32": _TYPE.FLOAT32, "float": _TYPE.FLOAT32, "double": _TYPE.FLOAT64, "bool": _TYPE.UINT16}
_INT_BITS = {"int16": 16, "uint16": 16, "int32": 32, "uint32": 32}
_ONE_REGISTER = {"int16": -0x8000, "uint16": 0}  # lowest value of the 16-bit integer types
_FLOATS = ("float32", "float", "double")
READ_FUNCTION = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}  # Modbus function code per table
WRITE_FUNCTION = {"coil": 5, "holding": 16}  # write single coil, write multiple registers
_EXCEPTION_NAMES = {1: "ILLEGAL_FUNCTION", 2: "ILLEGAL_ADDRESS", 3: "ILLEGAL_VALUE", 4: "DEVICE_FAILURE",
                    5: "ACKNOWLEDGE", 6: "DEVICE_BUSY", 10: "GATEWAY_PATH_UNAVAILABLE",
                    11: "GATEWAY_TARGET_NO_RESPONSE"}


def exception_name(code: int) -> str:
    return f"{_EXCEPTION_NAMES.get(code, 'EXCEPTION')} ({code})"


def _swap_bytes(regs: Sequence[int]) -> list[int]:
    return [((w & 0xFF) << 8) | (w >> 8) for w in regs]


def encode(spec: TagSpec, raw: float) -> list[int]:
    """The raw number (engineering value already unscaled) to registers, lowest address
    first: the fast path for one big-endian 16-bit register, else :func:`encode_reference`."""
    if spec.datatype in _ONE_REGISTER and spec.byte_order == "big":
        value = int(round(raw))
        low = _ONE_REGISTER[spec.datatype]
        if low <= value <= low + 0xFFFF:
            return [value & 0xFFFF]
    return encode_reference(spec, raw)


def encode_reference(spec: TagSpec, raw: float) -> list[int]:
    """Every type, word and byte order. An integer out of its type's range is refused where
    the tag has a valid range, and wraps where it has none (a counter: the heartbeat)."""
    wire: float | int
    if spec.datatype == "bool":
        wire = 1 if raw else 0
    elif spec.datatype in _INT_BITS:
        wire = int(round(raw))
        bits = _INT_BITS[spec.datatype]
        signed = not spec.datatype.startswith("u")
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        if not lo <= wire <= hi:
            if spec.range is not None:
                raise TransportError(f"value {wire} does not fit {spec.datatype}")
            wire %= 1 << bits
            if signed and wire > hi:
                wire -= 1 << bits
    else:
        wire = float(raw)
    try:
        regs = ModbusClientMixin.convert_to_registers(wire, _DATATYPE[spec.datatype], spec.word_order)
    except (struct.error, OverflowError) as exc:
        raise TransportError(f"value {raw} does not fit {spec.datatype}: {exc}") from None
    return _swap_bytes(regs) if spec.byte_order == "little" else regs


def decode(spec: TagSpec, regs: Sequence[int]) -> float:
    """Registers as read (lowest address first) to the raw number."""
    words = _swap_bytes(regs) if spec.byte_order == "little" else list(regs)
    value = ModbusClientMixin.convert_from_registers(words, _DATATYPE[spec.datatype], spec.word_order)
    return float(value != 0) if spec.datatype == "bool" else float(value)  # type: ignore[arg-type]


def _struct_code(datatype: str) -> str:
    return {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "float32": "f", "float": "f",
            "double": "d", "bool": "H"}[datatype]


@dataclass
class Block:
    """One read request: a unit id, a table and a contiguous address range, with the tags
    in it and how to decode them."""

    unit: int
    table: str
    start: int
    count: int
    slots: list[int] = field(default_factory=list)
    specs: list[TagSpec] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    # filled by finish(): the hot path's precomputed pieces
    slot_arr: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.intp))
    index: slice | np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.intp))
    scale: np.ndarray = field(default_factory=lambda: np.empty(0))
    offset: np.ndarray = field(default_factory=lambda: np.empty(0))
    good: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint8))
    # fast path: the whole block in one struct (pad bytes between tags) where register tags
    # do not overlap; None: the reference, per tag. ``order``: the response's registers in
    # the order the struct reads them (little word order reversed), ``swap``: the positions
    # whose bytes are swapped (little byte order); None where nothing moves
    whole: struct.Struct | None = None
    buf_fmt: str = ""
    order: np.ndarray | None = None
    swap: np.ndarray | None = None
    bools: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.intp))
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
        self.floats = any(s.datatype in _FLOATS for s in self.specs)

    def _compile(self) -> struct.Struct | None:
        if self.table in BIT_TABLES:
            return None
        fmt, at = ">", 0
        order: list[int] = []
        swap: list[int] = []
        for spec, off in zip(self.specs, self.offsets, strict=True):
            if off < at:
                return None  # overlapping tags: per tag
            fmt += f"{2 * (off - at)}x" if off > at else ""
            order += range(at, off)
            words = list(range(off, off + MODBUS_REGISTERS[spec.datatype]))
            if spec.byte_order == "little":
                swap += range(len(order), len(order) + len(words))
            order += reversed(words) if spec.word_order == "little" else words
            fmt += _struct_code(spec.datatype)
            at = off + len(words)
        order += range(at, self.count)
        self.order = None if order == list(range(self.count)) else np.array(order, dtype=np.intp)
        self.swap = np.array(swap, dtype=np.intp) if swap else None
        return struct.Struct(fmt + (f"{2 * (self.count - at)}x" if self.count > at else ""))

    def raw(self, response: object) -> np.ndarray:
        """The raw numbers of the block's tags from a read response (registers or bits);
        a response of the wrong shape is a ProtocolError (:func:`check_reply`)."""
        check_reply(response, READ_FUNCTION[self.table], self.count, self.table in BIT_TABLES,
                    f"unit {self.unit} {self.table} {self.start}+{self.count}")
        if self.table in BIT_TABLES:
            bits = response.bits  # type: ignore[attr-defined]
            return np.array([1.0 if bits[off] else 0.0 for off in self.offsets])
        regs = response.registers  # type: ignore[attr-defined]
        if self.whole is None:
            return np.array([decode(spec, regs[off:off + width(spec)])
                             for spec, off in zip(self.specs, self.offsets, strict=True)])
        if self.order is None and self.swap is None:
            buf = struct.pack(self.buf_fmt, *regs[:self.count])
        else:
            words = np.array(regs[:self.count], dtype=np.uint16)
            if self.order is not None:
                words = words[self.order]
            if self.swap is not None:
                words[self.swap] = words[self.swap].byteswap()
            buf = words.astype(">u2").tobytes()
        values = np.array(self.whole.unpack(buf), dtype=float)
        if len(self.bools):
            values[self.bools] = values[self.bools] != 0
        return values


def check_reply(response: object, function: int, count: int, bits: bool, what: str) -> None:
    """A read (or write, ``count`` 0) reply answers the request's function code with its
    number of registers (bits: at least ``count``, padded to whole bytes), or ProtocolError."""
    fc = getattr(response, "function_code", None)
    if fc != function:
        raise ProtocolError(f"protocol fault: {what}: answered function code {fc}, asked {function}")
    if not count:
        return
    got = len(response.bits) if bits else len(response.registers)  # type: ignore[attr-defined]
    if got != count and not (bits and count <= got < count + 8):
        raise ProtocolError(f"protocol fault: {what}: answered {got} {'bits' if bits else 'registers'}, "
                            f"asked {count}")


def plan_blocks(specs: dict[str, TagSpec], names: Sequence[str], slots: Sequence[int],
                max_block: int) -> list[Block]:
    """Merge tags into contiguous read blocks per (unit, table); never bridge a gap."""
    items = sorted(zip(names, slots, strict=True),
                   key=lambda it: (specs[it[0]].unit, specs[it[0]].table or "", specs[it[0]].address or 0))
    blocks: list[Block] = []
    for name, slot in items:
        spec = specs[name]
        assert spec.table is not None and spec.address is not None
        end = spec.address + width(spec)
        cap = 2000 if spec.table in BIT_TABLES else max_block
        last = blocks[-1] if blocks else None
        if (last is not None and last.unit == spec.unit and last.table == spec.table
                and spec.address <= last.start + last.count and max(end, last.start + last.count) - last.start <= cap):
            last.count = max(end, last.start + last.count) - last.start
        else:
            last = Block(unit=spec.unit, table=spec.table, start=spec.address, count=end - spec.address)
            blocks.append(last)
        last.slots.append(slot)
        last.specs.append(spec)
        last.offsets.append(spec.address - last.start)
    for block in blocks:
        block.finish()
    return blocks
