"""A CSTR twin read and written with a plain pymodbus client, per docs/twins.md."""

from __future__ import annotations

import asyncio
import struct

import pytest
from asyncua import Client
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.pdu import ExceptionResponse

from edgewarden.simulators.plants.cstr import SAFE_ACTION
from edgewarden.simulators.twin import Twin

DEV = 1


def f32(regs: list[int]) -> float:
    """Big-endian word order, big-endian bytes: what docs/twins.md specifies."""
    return struct.unpack(">f", struct.pack(">HH", regs[0], regs[1]))[0]


def regs(value: float) -> list[int]:
    return list(struct.unpack(">HH", struct.pack(">f", value)))


@pytest.mark.anyio
async def test_register_map_is_live_and_shared_with_opcua() -> None:
    async with Twin("cstr", scan_ms=10, watchdog_ms=300) as twin:
        img = twin.plc.image
        assert isinstance(twin.modbus_port, int) and twin.modbus_port > 0
        client = AsyncModbusTcpClient("127.0.0.1", port=twin.modbus_port, timeout=2)
        assert await client.connect()
        try:
            # input registers: measurements as float32
            ir = await client.read_input_registers(0, count=10, device_id=DEV)
            assert not ir.isError()
            t, ca, tj, fc, q = (f32(ir.registers[i:i + 2]) for i in range(0, 10, 2))
            assert abs(t - img["T"]) < 0.5 and 340 < t < 360
            assert 0.3 < ca < 0.7 and 300 < tj < t
            assert (fc, q) == tuple(SAFE_ACTION)
            # holding registers: setpoints, then the heartbeat
            hr = await client.read_holding_registers(0, count=11, device_id=DEV)
            assert f32(hr.registers[0:2]) == 350.0  # T_sp
            assert hr.registers[10] == 0  # heartbeat
            co = await client.read_coils(0, count=3, device_id=DEV)
            assert co.bits[:3] == [False, False, True]  # estop_cmd, reset_cmd, auto
            di = await client.read_discrete_inputs(0, count=3, device_id=DEV)
            assert di.bits[:3] == [False, False, False]  # remote, estop, watchdog

            # writes land in the image, and OPC UA sees them
            w = await client.write_registers(2, values=regs(120.0) + regs(80.0),
                                             device_id=DEV)
            assert not w.isError()
            assert (img["coolant_flow_sp"], img["feed_flow_sp"]) == (120.0, 80.0)
            async with Client(twin.opcua_url, timeout=5) as ua_client:
                await asyncio.sleep(0.05)
                sp = ua_client.get_node("ns=2;s=cstr.coolant_flow_sp")
                assert await sp.read_value() == 120.0
                await sp.write_value(125.0)  # and the other way round
            hr = await client.read_holding_registers(2, count=2, device_id=DEV)
            assert f32(hr.registers) == 125.0

            # a heartbeat over Modbus takes REMOTE
            for i in range(1, 30):
                await client.write_register(10, i, device_id=DEV)
                await asyncio.sleep(0.02)
            di = await client.read_discrete_inputs(0, count=3, device_id=DEV)
            assert di.bits[:3] == [True, False, False]
            ir = await client.read_input_registers(6, count=4, device_id=DEV)
            assert (f32(ir.registers[0:2]), f32(ir.registers[2:4])) == (125.0, 80.0)

            # e-stop coil: latched, safe outputs; reset coil after release clears it
            await client.write_coil(0, True, device_id=DEV)
            await asyncio.sleep(0.05)
            di = await client.read_discrete_inputs(0, count=3, device_id=DEV)
            assert di.bits[:2] == [False, True]
            ir = await client.read_input_registers(6, count=4, device_id=DEV)
            assert (f32(ir.registers[0:2]), f32(ir.registers[2:4])) == tuple(SAFE_ACTION)
            await client.write_coil(0, False, device_id=DEV)
            await client.write_register(10, 1000, device_id=DEV)
            await client.write_coil(1, True, device_id=DEV)
            await client.write_register(10, 1001, device_id=DEV)
            await asyncio.sleep(0.05)
            assert img["estop"] is False and img["remote"] is True
            co = await client.read_coils(1, count=1, device_id=DEV)
            assert co.bits[0] is False  # the reset pulse was cleared by the PLC

            # what the map forbids
            bad = await client.write_register(2, 1, device_id=DEV)  # half a float32
            assert isinstance(bad, ExceptionResponse) and bad.exception_code == 2
            bad = await client.read_input_registers(9, count=2, device_id=DEV)
            assert isinstance(bad, ExceptionResponse) and bad.exception_code == 2
            bad = await client.read_holding_registers(11, count=1, device_id=DEV)
            assert bad.isError()
            assert img["coolant_flow_sp"] == 125.0
        finally:
            client.close()


# ---- a conformant device: raw frames, so nothing in a client library tidies them up -------
async def _raw(port: int, unit: int, pdu: bytes, tid: int = 7) -> bytes:
    """One Modbus TCP request (MBAP header + PDU); the response PDU."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu)
        head = await asyncio.wait_for(reader.readexactly(7), 2.0)
        got_tid, _, length, got_unit = struct.unpack(">HHHB", head)
        assert (got_tid, got_unit) == (tid, unit)
        return await reader.readexactly(length - 1)
    finally:
        writer.close()


@pytest.mark.anyio
async def test_the_twin_answers_like_a_conformant_device() -> None:
    async with Twin("cstr") as twin:
        port = twin.modbus_port
        assert port is not None
        image = twin.plc.image
        # Write Single Coil: only 0xFF00 / 0x0000 are values (0x1234 must not latch the e-stop)
        assert await _raw(port, 1, struct.pack(">BHH", 5, 0, 0x1234)) == bytes([0x85, 3])
        assert image["estop_cmd"] is False
        assert await _raw(port, 1, struct.pack(">BHH", 5, 2, 0x0000)) == struct.pack(">BHH", 5, 2, 0)
        assert image["auto"] is False
        assert await _raw(port, 1, struct.pack(">BHH", 5, 2, 0xFF00)) == struct.pack(">BHH", 5, 2, 0xFF00)
        # quantity 0 or over the maximum
        assert await _raw(port, 1, struct.pack(">BHH", 3, 0, 0)) == bytes([0x83, 3])
        assert await _raw(port, 1, struct.pack(">BHH", 4, 0, 126)) == bytes([0x84, 3])
        assert await _raw(port, 1, struct.pack(">BHH", 1, 0, 2001)) == bytes([0x81, 3])
        # function codes the docs do not list: diagnostics (8), mask write (22)
        assert await _raw(port, 1, struct.pack(">BHH", 8, 0, 0x1234)) == bytes([0x88, 1])
        assert await _raw(port, 1, struct.pack(">BHHH", 22, 0, 0xFFFF, 0)) == bytes([0x96, 1])
        # 0x8000 to a scaled int16 register is the "no value" marker, never -3276.8
        t_sp = next(r for r in twin.modbus.map if r.tag == "T_sp" and r.kind == "int16")
        before = image["T_sp"]
        assert await _raw(port, 1, struct.pack(">BHH", 6, t_sp.address, 0x8000)) == bytes([0x86, 3])
        assert image["T_sp"] == before
        assert await _raw(port, 1, struct.pack(">BHH", 6, t_sp.address, 3450)) == \
            struct.pack(">BHH", 6, t_sp.address, 3450)
        assert image["T_sp"] == 345.0
        # unit 255 only where enabled
        assert (await _raw(port, 255, struct.pack(">BHH", 3, 0, 2)))[0] == 0x83
    async with Twin("cstr", modbus_unit_255=True) as twin:  # `twin serve --modbus-unit-255`
        assert twin.modbus_port is not None
        reply = await _raw(twin.modbus_port, 255, struct.pack(">BHH", 3, 0, 2))
        assert reply[:2] == bytes([3, 4])  # two registers, four bytes
