"""A CSTR twin on loopback, driven by a plain asyncua client (none of our client code)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from asyncua import Client, ua

from edgewarden.simulators.plants.cstr import SAFE_ACTION
from edgewarden.simulators.twin import Twin

MEASUREMENTS = ["T", "CA", "Tj", "coolant_flow", "feed_flow"]
SETPOINTS = ["T_sp", "coolant_flow_sp", "feed_flow_sp", "heartbeat", "estop_cmd",
             "reset_cmd", "auto", "coolant_flow_man", "feed_flow_man"]
STATUS = ["remote", "estop", "watchdog_tripped"]


def node(client: Client, tag: str):
    return client.get_node(f"ns=2;s=cstr.{tag}")


async def browse_names(n) -> list[str]:
    return [(await c.read_browse_name()).Name for c in await n.get_children()]


@pytest.mark.anyio
async def test_address_space_reads_and_writes() -> None:
    async with Twin("cstr", modbus=None) as twin:
        assert twin.opcua_url.startswith("opc.tcp://127.0.0.1:")
        assert not twin.opcua_url.endswith(":0")
        async with Client(twin.opcua_url, timeout=5) as client:
            assert await client.get_namespace_index("urn:edgewarden:twin") == 2
            cstr = await client.nodes.objects.get_child(["2:cstr"])
            assert cstr.nodeid == ua.NodeId("cstr", 2)
            assert await browse_names(cstr) == ["Measurements", "Setpoints", "Status", "Alarms"]
            folders = {name: await cstr.get_child([f"2:{name}"])
                       for name in ("Measurements", "Setpoints", "Status")}
            assert await browse_names(folders["Measurements"]) == MEASUREMENTS
            assert await browse_names(folders["Setpoints"]) == SETPOINTS
            assert await browse_names(folders["Status"]) == STATUS

            # data types and access levels
            expected_type = {"heartbeat": ua.VariantType.UInt32}
            for tag in SETPOINTS + MEASUREMENTS + STATUS:
                vt = await node(client, tag).read_data_type_as_variant_type()
                want = expected_type.get(tag, ua.VariantType.Boolean
                                         if tag in STATUS + ["estop_cmd", "reset_cmd",
                                                             "auto"]
                                         else ua.VariantType.Double)
                assert vt == want, tag
                access = await node(client, tag).get_user_access_level()
                assert ua.AccessLevel.CurrentRead in access
                assert (ua.AccessLevel.CurrentWrite in access) == (tag in SETPOINTS), tag

            # measurements: plausible, units, range, fresh source timestamps
            dv = await node(client, "T").read_data_value()
            assert 340.0 < dv.Value.Value < 360.0
            assert dv.SourceTimestamp is not None
            assert abs(dv.SourceTimestamp.replace(tzinfo=UTC) - datetime.now(UTC)) < \
                timedelta(seconds=5)
            eu = await node(client, "T").get_child(["0:EngineeringUnits"])
            assert (await eu.read_value()).DisplayName.Text == "K"
            rng = await (await node(client, "coolant_flow").get_child(["0:EURange"])
                         ).read_value()
            assert (rng.Low, rng.High) == (0.0, 200.0)
            assert await node(client, "T_sp").read_value() == 350.0
            assert await node(client, "auto").read_value() is True
            assert await node(client, "coolant_flow").read_value() == SAFE_ACTION[0]

            # a Python float written to a Double lands in the PLC image
            await node(client, "coolant_flow_sp").write_value(123.5)
            assert twin.plc.image["coolant_flow_sp"] == 123.5
            assert await node(client, "coolant_flow_sp").read_value() == 123.5
            sp_dv = await node(client, "coolant_flow_sp").read_data_value()
            assert sp_dv.SourceTimestamp is not None
            await node(client, "T_sp").write_value(345.0)
            assert twin.plc.image["T_sp"] == 345.0
            # refusals with the status codes OPC UA Part 4 gives them: a read-only node,
            # a node that does not exist, a value outside EURange, a wrong type
            async def write_status(nid: str, variant: ua.Variant) -> str:
                res = await client.uaclient.write_attributes([ua.NodeId.from_string(nid)],
                                                             [ua.DataValue(variant)], ua.AttributeIds.Value)
                return res[0].name

            double = ua.VariantType.Double
            assert await write_status("ns=2;s=cstr.T", ua.Variant(1.0, double)) == "BadNotWritable"
            assert await write_status("ns=2;s=cstr.remote", ua.Variant(True, ua.VariantType.Boolean)) \
                == "BadNotWritable"
            assert await write_status("ns=2;s=cstr.nothing", ua.Variant(1.0, double)) == "BadNodeIdUnknown"
            assert await write_status("ns=2;s=cstr.coolant_flow_sp", ua.Variant(250.0, double)) \
                == "BadOutOfRange"
            assert twin.plc.image["coolant_flow_sp"] == 123.5  # the refused value never landed
            with pytest.raises(ua.UaStatusCodeError):
                await node(client, "heartbeat").write_value(1.5)
            assert twin.plc.image["remote"] is False

            # values the PLC changes reach the client (published each scan)
            twin.plc.image.write("feed_flow_man", 42.0)
            await asyncio.sleep(0.05)
            assert await node(client, "feed_flow_man").read_value() == 42.0


@pytest.mark.anyio
async def test_heartbeat_over_opcua_keeps_remote_and_its_loss_trips_within_watchdog() -> None:
    watchdog_ms = 300

    async with Twin("cstr", modbus=None, scan_ms=10, watchdog_ms=watchdog_ms) as twin:
        img = twin.plc.image
        async with Client(twin.opcua_url, timeout=5) as client:
            hb = node(client, "heartbeat")
            await node(client, "coolant_flow_sp").write_value(110.0)
            await node(client, "feed_flow_sp").write_value(95.0)
            count = 0

            async def beat(seconds: float) -> None:
                nonlocal count
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    count += 1
                    await hb.write_value(ua.Variant(count, ua.VariantType.UInt32))
                    await asyncio.sleep(0.05)

            await beat(0.8)
            assert img["remote"] is True
            assert await node(client, "remote").read_value() is True
            assert await node(client, "coolant_flow").read_value() == 110.0
            assert await node(client, "feed_flow").read_value() == 95.0

            # stop the heartbeat: safe outputs within the watchdog time (+ scan slack)
            stopped = time.monotonic()
            while img["remote"]:
                assert time.monotonic() - stopped < 2.0, "PLC never dropped REMOTE"
                await asyncio.sleep(0.005)
            elapsed = time.monotonic() - stopped
            assert elapsed <= watchdog_ms / 1000 + 0.1
            assert elapsed >= watchdog_ms / 1000 - 0.06  # not before the watchdog time
            assert list(twin.plc.outputs) == list(SAFE_ACTION)
            await asyncio.sleep(0.05)
            assert await node(client, "watchdog_tripped").read_value() is True
            assert await node(client, "remote").read_value() is False
            assert await node(client, "coolant_flow").read_value() == SAFE_ACTION[0]
            assert await node(client, "feed_flow").read_value() == SAFE_ACTION[1]

            # heartbeat back: still latched; reset with a fresh heartbeat: REMOTE again
            await beat(0.3)
            assert img["remote"] is False and img["watchdog_tripped"] is True
            await node(client, "reset_cmd").write_value(True)
            await beat(0.2)
            assert img["watchdog_tripped"] is False and img["remote"] is True
            assert await node(client, "reset_cmd").read_value() is False  # pulse cleared
            assert list(twin.plc.outputs) == [110.0, 95.0]

            # e-stop over OPC UA latches even with a live heartbeat
            await node(client, "estop_cmd").write_value(True)
            await beat(0.1)
            assert img["estop"] is True and img["remote"] is False
            assert await node(client, "estop").read_value() is True
    assert twin.overruns < 20
