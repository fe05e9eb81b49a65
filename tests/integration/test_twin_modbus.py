"""A CSTR twin read and written with a plain pymodbus client, per docs/twins.md."""

from __future__ import annotations

import asyncio
import struct

from asyncua import Client
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.pdu import ExceptionResponse

from simulators.plants.cstr import SAFE_ACTION
from simulators.twin import Twin

DEV = 1


def f32(regs: list[int]) -> float:
    """Big-endian word order, big-endian bytes: what docs/twins.md specifies."""
    return struct.unpack(">f", struct.pack(">HH", regs[0], regs[1]))[0]


def regs(value: float) -> list[int]:
    return list(struct.unpack(">HH", struct.pack(">f", value)))


def test_register_map_is_live_and_shared_with_opcua() -> None:
    async def main() -> None:
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

    asyncio.run(main())
