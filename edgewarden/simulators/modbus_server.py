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

Conformance (Modbus Application Protocol V1.1b3): the function codes served are those of
the map (1, 2, 3, 4, 5, 6, 15, 16); any other answers ILLEGAL_FUNCTION (1). A quantity
of 0 or above the protocol's maximum (125 registers read, 123 written, 2000 bits read,
1968 written), a Write Single Coil value other than
0xFF00 or 0x0000, and 0x8000 written to an int16 register (the NaN / out-of-range
marker, never a value) answer ILLEGAL_DATA_VALUE (3). The twin answers its device id
and, with ``unit_255``, also unit 255 (the "not used" id of Modbus TCP).

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
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusTcpServer

from edgewarden.gateway.errors import TransportError
from edgewarden.simulators.image import PlcImage

WordOrder = Literal["big", "little"]
Table = Literal["ir", "hr", "co", "di"]
# the function codes served (docs/twins.md lists exactly these)
_FC_TABLE: dict[int, Table] = {4: "ir", 3: "hr", 6: "hr", 16: "hr", 1: "co", 5: "co", 15: "co", 2: "di"}
# largest quantity per function code (Modbus Application Protocol V1.1b3, section 6)
_MAX_READ = {1: 2000, 2: 2000, 3: 125, 4: 125}
_MAX_WRITE = {15: 1968, 16: 123}
_COIL_ON, _COIL_OFF = 0xFF00, 0x0000


def _checked(request: type[ModbusPDU]) -> type[ModbusPDU]:
    """``request`` answering ILLEGAL_DATA_VALUE where pymodbus would drop the frame and answer
    an exception for function code 0 (a quantity outside the protocol's range), or take a
    value the protocol does not define (Write Single Coil other than 0xFF00 / 0x0000)."""

    class Checked(request):  # type: ignore[valid-type,misc]
        illegal = False

        def decode(self, data: bytes) -> None:
            try:
                super().decode(data)
            except ValueError:  # pymodbus' quantity check
                self.illegal = True
                return
            if self.function_code == 5:
                self.illegal = struct.unpack(">H", data[2:4])[0] not in (_COIL_ON, _COIL_OFF)

        async def datastore_update(self, context: ModbusServerContext, device_id: int) -> ModbusPDU:
            if self.illegal:
                return ExceptionResponse(self.function_code, ExcCodes.ILLEGAL_VALUE)
            return await super().datastore_update(context, device_id)

    Checked.__name__ = Checked.__qualname__ = request.__name__
    return Checked


def _unsupported(code: int) -> type[ModbusPDU]:
    """Any function code the twin does not serve: ILLEGAL_FUNCTION for that code (pymodbus
    alone answers some itself and the rest with an exception for function code 0)."""

    class Unsupported(ModbusPDU):
        function_code = code

        def decode(self, data: bytes) -> None:
            pass  # Modbus TCP frames by the MBAP length: the body needs no decoding

        async def datastore_update(self, context: ModbusServerContext, device_id: int) -> ModbusPDU:
            return ExceptionResponse(self.function_code, ExcCodes.ILLEGAL_FUNCTION)

    Unsupported.__name__ = Unsupported.__qualname__ = f"Unsupported{code}"
    return Unsupported


# the decoder table of the twin's server: its function codes checked, every other refused
_PDUS = [_checked(DecodePDU.pdu_table[fc][0]) for fc in _FC_TABLE] + \
    [_unsupported(fc) for fc in range(1, 128) if fc not in _FC_TABLE]


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

    def __init__(self, image: PlcImage, device_id: int, word_order: WordOrder, unit_255: bool = False) -> None:
        # Deliberately not calling super().__init__: it only builds the deprecated
        # in-memory blocks (and logs a deprecation warning); we serve the image instead.
        self.image = image
        self.device_id = device_id
        self.ids = (device_id, 255) if unit_255 and device_id != 255 else (device_id,)
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
        return list(self.ids)

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
        if device_id not in self.ids:
            return ExcCodes.GATEWAY_NO_RESPONSE
        table = _FC_TABLE.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        if func_code in _MAX_READ and not 1 <= count <= _MAX_READ[func_code]:
            return ExcCodes.ILLEGAL_VALUE
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
        if device_id not in self.ids:
            return ExcCodes.GATEWAY_NO_RESPONSE
        table = _FC_TABLE.get(func_code)
        if table not in ("hr", "co"):
            return ExcCodes.ILLEGAL_FUNCTION
        if func_code in _MAX_WRITE and not 1 <= len(values) <= _MAX_WRITE[func_code]:
            return ExcCodes.ILLEGAL_VALUE
        cells = self._cells[table]
        span = range(address, address + len(values))
        # Validate the whole request first: every cell mapped, no float32 cut in half, no
        # int16 register given the marker that means "no value"
        for a in span:
            cell = cells.get(a)
            if cell is None:
                return ExcCodes.ILLEGAL_ADDRESS
            reg, _ = cell
            if reg.address not in span or reg.address + reg.width - 1 not in span:
                return ExcCodes.ILLEGAL_ADDRESS
            if reg.kind == "int16" and int(values[a - address]) & 0xFFFF == 0x8000:
                return ExcCodes.ILLEGAL_VALUE
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
                 verbose: bool = False, unit_255: bool = False) -> None:
        if word_order not in ("big", "little"):
            raise ValueError("word_order must be 'big' or 'little'")
        self.context = _ImageContext(image, device_id, word_order, unit_255)
        self.host = host
        self._requested_port = port
        self._verbose = verbose
        self._server: ModbusTcpServer | None = None
        self.port: int | None = None

    @property
    def map(self) -> tuple[Register, ...]:
        return self.context.map

    async def start(self) -> None:
        server = ModbusTcpServer(self.context, address=(self.host, self._requested_port), custom_pdu=_PDUS)
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
