"""Every fault type observed by real clients (asyncua, pymodbus, raw sockets), injected over
the twin's control endpoint, as ``edgewarden twin fault`` does."""

from __future__ import annotations

import asyncio
import logging
import math
import struct
import time

import pytest
from asyncua import Client, ua
from pymodbus.client import AsyncModbusTcpClient

from edgewarden.simulators.fault_control import request
from edgewarden.simulators.twin import Twin

NS = "ns=2;s=cstr."


def f32(regs: list[int]) -> float:
    return struct.unpack(">f", struct.pack(">HH", regs[0], regs[1]))[0]


async def ctl(twin: Twin, **req) -> dict:
    answer = await request("127.0.0.1", twin.control_port, req)
    assert answer["ok"], answer
    return answer


def fault_twin() -> Twin:
    return Twin("cstr", scan_ms=10, watchdog_ms=300, faults=True, control=("127.0.0.1", 0))


async def read_dv(client: Client, tag: str) -> ua.DataValue:
    return await client.get_node(NS + tag).read_data_value(raise_on_bad_status=False)


@pytest.mark.anyio
async def test_sensor_faults_seen_over_opcua_and_modbus(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edgewarden.simulators.faults")

    async with fault_twin() as twin:
        async with Client(twin.opcua_url, timeout=5) as client:
            mb = AsyncModbusTcpClient("127.0.0.1", port=twin.modbus_port)
            await mb.connect()
            try:
                await asyncio.sleep(0.05)
                true_t = twin.plant.observe()[0]
                # bias
                f = (await ctl(twin, op="inject", kind="bias", target="T", value=5.0))["fault"]
                await asyncio.sleep(0.05)
                dv = await read_dv(client, "T")
                assert dv.Value.Value == pytest.approx(true_t + 5.0, abs=0.05)
                assert dv.StatusCode.is_good()
                ir = await mb.read_input_registers(0, count=2, device_id=1)
                assert f32(ir.registers) == pytest.approx(true_t + 5.0, abs=0.05)
                await ctl(twin, op="clear", id=f["id"])
                # bad quality: OPC UA status, Modbus NaN / -32768
                await ctl(twin, op="inject", kind="bad", target="T")
                await asyncio.sleep(0.05)
                dv = await read_dv(client, "T")
                assert dv.StatusCode.value == ua.StatusCodes.BadSensorFailure
                ir = await mb.read_input_registers(0, count=2, device_id=1)
                assert math.isnan(f32(ir.registers))
                ir = await mb.read_input_registers(1000, count=1, device_id=1)
                assert ir.registers[0] == 0x8000
                await ctl(twin, op="clear")
                await asyncio.sleep(0.05)
                assert (await read_dv(client, "T")).StatusCode.is_good()
                # uncertain
                await ctl(twin, op="inject", kind="uncertain", target="CA")
                await asyncio.sleep(0.05)
                dv = await read_dv(client, "CA")
                assert dv.StatusCode.value == ua.StatusCodes.UncertainSensorNotAccurate
                await ctl(twin, op="clear")
                # freeze while the plant moves
                twin.plc.image.write("auto", False)
                twin.plc.image.write("coolant_flow_man", 0.0)
                twin.plc.image.write("feed_flow_man", 100.0)
                await ctl(twin, op="inject", kind="freeze", target="T")
                await asyncio.sleep(0.05)
                frozen = (await read_dv(client, "T")).Value.Value
                twin.plc.time_scale = 50.0
                await asyncio.sleep(0.3)
                assert (await read_dv(client, "T")).Value.Value == frozen
                assert twin.plant.observe()[0] != pytest.approx(frozen, abs=1e-3)
                await ctl(twin, op="clear")
                twin.plc.time_scale = 1.0
                twin.plc.image.write("auto", True)
                # drift
                await ctl(twin, op="inject", kind="drift", target="Tj", rate=20.0)
                await asyncio.sleep(0.3)
                dv = await read_dv(client, "Tj")
                assert dv.Value.Value - twin.plant.observe()[2] > 3.0
                await ctl(twin, op="clear")
                # noise: values scatter around the truth
                await ctl(twin, op="inject", kind="noise", target="CA", sigma=0.05)
                vals = []
                for _ in range(10):
                    await asyncio.sleep(0.02)
                    vals.append((await read_dv(client, "CA")).Value.Value)
                assert len(set(vals)) > 5 and max(vals) - min(vals) > 0.02
                await ctl(twin, op="clear")
                # spikes: some reads jump by the magnitude
                await ctl(twin, op="inject", kind="spike", target="T", magnitude=50.0,
                          prob=0.5)
                vals = []
                for _ in range(20):
                    await asyncio.sleep(0.02)
                    ir = await mb.read_input_registers(0, count=2, device_id=1)
                    vals.append(f32(ir.registers) - twin.plant.observe()[0])
                assert max(abs(v) for v in vals) > 40.0
                listed = (await ctl(twin, op="list"))["faults"]
                assert [x["kind"] for x in listed] == ["spike"]
                await ctl(twin, op="clear")
            finally:
                mb.close()
    kinds = " ".join(r.getMessage() for r in caplog.records)
    for kind in ("bias", "bad", "uncertain", "freeze", "drift", "noise", "spike"):
        assert f"fault inject: kind={kind}" in kinds
    assert "fault clear:" in kinds


@pytest.mark.anyio
async def test_network_faults_seen_by_real_clients() -> None:
    async with fault_twin() as twin:
        port = twin.modbus_port
        mb = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=0.5, retries=0)
        await mb.connect()
        try:
            # latency
            t0 = time.perf_counter()
            await mb.read_input_registers(0, count=2, device_id=1)
            fast = time.perf_counter() - t0
            await ctl(twin, op="inject", kind="latency", target="modbus", ms=150)
            t0 = time.perf_counter()
            await mb.read_input_registers(0, count=2, device_id=1)
            assert time.perf_counter() - t0 >= 0.15 > fast
            await ctl(twin, op="clear")
            # hang: the connection stays open, no answer comes
            await ctl(twin, op="inject", kind="hang", target="modbus")
            with pytest.raises(Exception):  # pymodbus: timeout, no response
                await mb.read_input_registers(0, count=2, device_id=1)
            await ctl(twin, op="clear")
        finally:
            mb.close()
        # drop: an open raw connection is closed by the twin
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.05)
        await ctl(twin, op="inject", kind="drop", target="both")
        assert await asyncio.wait_for(reader.read(10), 2) == b""
        writer.close()
        # refuse: new connections are refused until cleared
        await ctl(twin, op="inject", kind="refuse", target="modbus")
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
        await ctl(twin, op="clear")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        # restart of OPC UA: the session is lost, a new client connects again
        async with Client(twin.opcua_url, timeout=5) as client:
            assert (await read_dv(client, "T")).StatusCode.is_good()
        await ctl(twin, op="inject", kind="restart", target="opcua")
        async with Client(twin.opcua_url, timeout=5) as client:
            assert (await read_dv(client, "T")).StatusCode.is_good()
        assert [h[2]["kind"] for h in twin.faults.history if h[1] == "inject"] == [
            "latency", "hang", "drop", "refuse", "restart"]
        # bad requests are one-line errors
        bad = [dict(op="inject", kind="melt", target="T"),
               dict(op="inject", kind="freeze", target="nope"),
               dict(op="inject", kind="noise", target="T", sigma="x"),
               dict(op="clear", id=99), dict(op="what")]
        for req in bad:
            answer = await request("127.0.0.1", twin.control_port, req)
            assert not answer["ok"] and "\n" not in answer["error"]
    # network faults need the proxies
    with pytest.raises(ValueError, match="--faults"):
        await Twin("cstr").faults.inject("hang", "opcua")
