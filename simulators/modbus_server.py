"""Modbus TCP server of a twin: serves the PLC image live (no copy, no sync task).

Register map, derived from the image's tag table in its order (see docs/twins.md for the
CSTR table); addresses are protocol addresses, starting at 0 in each table:

    input registers   (FC 4)        Measurements, float32, 2 registers each
    holding registers (FC 3/6/16)   Setpoints of type double, float32, 2 registers each,
                                    then ``heartbeat`` as one uint16 register
    coils             (FC 1/5/15)   Boolean Setpoints (estop_cmd, reset_cmd, auto)
    discrete inputs   (FC 2)        Status (remote, estop, watchdog_tripped), then Alarms
    int16 block                     from address 1000 of the input and holding registers,
                                    every double again as one scaled int16 register
                                    (value x scale, rounded; scale = the largest power of
                                    ten that keeps the range inside +-32767; NaN and
                                    out-of-range read as -32768)

float32 is IEEE 754, big-endian bytes; word order ``"big"`` (default: high word at the
lower address) or ``"little"``. A written heartbeat register sets the image's counter to
the 16-bit value; the PLC only looks for changes. Reads and writes outside the map, and
writes that would cover half of a float32, answer ILLEGAL_ADDRESS.

Implementation: pymodbus 3.16 routes every request of a server whose context is a
``ModbusServerContext`` with ``old_simulator`` set to ``context.async_getValues`` /
``async_setValues``; :class:`_ImageContext` implements those two on the image.
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.server import ModbusTcpServer

from gateway.errors import TransportError
from simulators.image import PlcImage

WordOrder = Literal["big", "little"]
Table = Literal["ir", "hr", "co", "di"]
_FC_TABLE: dict[int, Table] = {4: "ir", 3: "hr", 6: "hr", 16: "hr", 22: "hr", 23: "hr",
                               1: "co", 5: "co", 15: "co", 2: "di"}


@dataclass(frozen=True)
class Register:
    """One tag's place in the map. ``kind`` is float32, uint16 or bit."""

    tag: str
    table: Table
    address: int
    kind: Literal["float32", "uint16", "int16", "bit"]
    scale: float = 1.0  # int16: register = round(value * scale)

    @property
    def width(self) -> int:
        return 2 if self.kind == "float32" else 1


INT16_BASE = 1000


def int16_scale(low: float | None, high: float | None) -> float:
    """The largest power of ten (10^-3 .. 10^4) that keeps low..high inside +-32767."""
    span = max(abs(low or 0.0), abs(high or 0.0), 1e-9)
    scale = 10_000.0
    while scale > 1e-3 and span * scale > 32767:
        scale /= 10.0
    return scale


def register_map(image: PlcImage) -> tuple[Register, ...]:
    """The Modbus map of an image, in tag order within each table, then the int16 block."""
    nxt: dict[Table, int] = {"ir": 0, "hr": 0, "co": 0, "di": 0}
    regs: list[Register] = []
    # heartbeat goes after the float32 setpoints so the floats stay one contiguous block
    tags = sorted(image.tags.values(), key=lambda t: t.vtype == "uint32")
    for tag in tags:
        if tag.vtype == "bool":
            table: Table = "co" if tag.writable else "di"
            kind: Literal["float32", "uint16", "int16", "bit"] = "bit"
        elif tag.vtype == "uint32":
            table, kind = "hr", "uint16"
        else:
            table, kind = ("hr" if tag.writable else "ir"), "float32"
        reg = Register(tag.name, table, nxt[table], kind)
        nxt[table] += reg.width
        regs.append(reg)
    nxt_int: dict[Table, int] = {"ir": INT16_BASE, "hr": INT16_BASE}
    for tag in image.tags.values():
        if tag.vtype == "double":
            table = "hr" if tag.writable else "ir"
            regs.append(Register(tag.name, table, nxt_int[table], "int16",
                                 int16_scale(tag.low, tag.high)))
            nxt_int[table] += 1
    return tuple(regs)


class _ImageContext(ModbusServerContext):
    """A datastore reading and writing the PLC image directly (device id ``device_id``)."""

    def __init__(self, image: PlcImage, device_id: int, word_order: WordOrder) -> None:
        # Deliberately not calling super().__init__: it only builds the deprecated
        # in-memory blocks (and logs a deprecation warning); we serve the image instead.
        self.image = image
        self.device_id = device_id
        self.word_order = word_order
        self.simdevices = []
        self.old_simulator = True  # pymodbus: route requests to async_get/setValues
        self.map = register_map(image)
        self._cells: dict[Table, dict[int, tuple[Register, int]]] = {
            "ir": {}, "hr": {}, "co": {}, "di": {}}
        for reg in self.map:
            for i in range(reg.width):
                self._cells[reg.table][reg.address + i] = (reg, i)

    def device_ids(self) -> list[int]:
        return [self.device_id]

    def _words(self, reg: Register) -> list[int]:
        value = self.image[reg.tag]
        if reg.kind == "uint16":
            return [int(value) & 0xFFFF]
        if self.image.quality(reg.tag) == "bad":
            value = math.nan  # Modbus has no quality: a Bad sensor reads as NaN / -32768
        if reg.kind == "int16":
            x = float(value) * reg.scale
            return [int(round(x)) & 0xFFFF if math.isfinite(x) and abs(x) <= 32767 else 0x8000]
        hi, lo = struct.unpack(">HH", struct.pack(">f", float(value)))
        return [hi, lo] if self.word_order == "big" else [lo, hi]

    async def async_getValues(self, device_id: int, func_code: int, address: int,
                              count: int = 1) -> list[int] | list[bool] | ExcCodes:
        if device_id != self.device_id:
            return ExcCodes.GATEWAY_NO_RESPONSE
        table = _FC_TABLE.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        cells = self._cells[table]
        out: list = []
        for a in range(address, address + count):
            cell = cells.get(a)
            if cell is None:
                return ExcCodes.ILLEGAL_ADDRESS
            reg, i = cell
            out.append(bool(self.image[reg.tag]) if reg.kind == "bit" else self._words(reg)[i])
        return out

    async def async_setValues(self, device_id: int, func_code: int, address: int,
                              values: Sequence[int] | Sequence[bool]) -> ExcCodes | None:
        if device_id != self.device_id:
            return ExcCodes.GATEWAY_NO_RESPONSE
        table = _FC_TABLE.get(func_code)
        if table not in ("hr", "co"):
            return ExcCodes.ILLEGAL_FUNCTION
        cells = self._cells[table]
        span = range(address, address + len(values))
        # Validate the whole request first: every cell mapped, no float32 cut in half.
        for a in span:
            cell = cells.get(a)
            if cell is None:
                return ExcCodes.ILLEGAL_ADDRESS
            reg, _ = cell
            if reg.address not in span or reg.address + reg.width - 1 not in span:
                return ExcCodes.ILLEGAL_ADDRESS
        done: set[str] = set()
        for a in span:
            reg, _ = cells[a]
            if reg.tag in done:
                continue
            done.add(reg.tag)
            raw = [int(v) for v in values[reg.address - address:reg.address - address + reg.width]]
            if reg.kind == "bit":
                self.image.write(reg.tag, bool(raw[0]))
            elif reg.kind == "uint16":
                self.image.write(reg.tag, raw[0] & 0xFFFF)
            elif reg.kind == "int16":
                signed = raw[0] & 0xFFFF
                signed = signed - 0x10000 if signed & 0x8000 else signed
                self.image.write(reg.tag, signed / reg.scale)
            else:
                hi, lo = raw if self.word_order == "big" else raw[::-1]
                self.image.write(reg.tag, struct.unpack(">f", struct.pack(">HH", hi, lo))[0])
        return None


class TwinModbusServer:
    """Serve ``image`` over Modbus TCP on ``host:port`` (port 0 = ephemeral, see ``port``)."""

    def __init__(self, image: PlcImage, host: str = "127.0.0.1", port: int = 0, *,
                 device_id: int = 1, word_order: WordOrder = "big",
                 verbose: bool = False) -> None:
        if word_order not in ("big", "little"):
            raise ValueError("word_order must be 'big' or 'little'")
        self.context = _ImageContext(image, device_id, word_order)
        self.host = host
        self._requested_port = port
        self._verbose = verbose
        self._server: ModbusTcpServer | None = None
        self.port: int | None = None

    @property
    def map(self) -> tuple[Register, ...]:
        return self.context.map

    async def start(self) -> None:
        server = ModbusTcpServer(self.context, address=(self.host, self._requested_port))
        # pymodbus has one logger for client and server: quieten it only while binding,
        # where it logs the OSError as a warning before raising a bare RuntimeError.
        pylog = logging.getLogger("pymodbus")
        level = pylog.level
        if not self._verbose:
            pylog.setLevel(logging.CRITICAL)
        try:
            await server.serve_forever(background=True)
        except RuntimeError:
            await server.shutdown()
            raise TransportError(
                f"cannot serve Modbus TCP on {self.host}:{self._requested_port}: "
                "address in use or not available"
            ) from None
        finally:
            pylog.setLevel(level)
        self._server = server
        sockets = getattr(server.transport, "sockets", None) or ()
        self.port = int(sockets[0].getsockname()[1]) if sockets else self._requested_port

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()

    async def restart(self) -> None:
        """Stop and serve again on the same port (open connections are closed)."""
        await self.stop()
        if self.port is not None:
            self._requested_port = self.port
        await self.start()
