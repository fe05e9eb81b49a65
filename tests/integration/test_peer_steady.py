"""A PLC that is not our twin: an asyncua server (written here) whose SourceTimestamp
advances only when a value changes, as the OPC UA specification allows and real servers
do, holding the CSTR's readings perfectly steady.

A steady value from a live server is fresh: the gateway stays READY and then AUTO long
past ``stale_ms`` and the hold timeout, polled or subscribed. With ``freeze_s`` on a tag,
the separate frozen-sensor check names that tag (and the gateway will not start on it).
"""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path

import pytest
from asyncua import Server, ua

from edgewarden.data import MODELS
from edgewarden.gateway.app import Gateway
from edgewarden.gateway.config import load_config
from edgewarden.gateway.ops.control import send_command
from edgewarden.simulators.opcua_server import quiet_asyncua
from tests.helpers import control_status, free_port, wait_for, write_config

SHIPPED = MODELS / "cstr_baseline.onnx"
# the example config's nodes (ns=2;s=cstr.NAME), steady values, variant types
NODES = {"T": (350.0, "Double"), "CA": (0.5, "Double"), "Tj": (300.0, "Double"), "T_sp": (350.0, "Double"),
         "estop": (False, "Boolean"), "auto": (True, "Boolean"), "remote": (True, "Boolean"),
         "watchdog_tripped": (False, "Boolean"), "coolant_flow": (200.0, "Double"),
         "feed_flow": (0.0, "Double"), "coolant_flow_sp": (200.0, "Double"), "feed_flow_sp": (0.0, "Double"),
         "heartbeat": (0, "UInt32")}


class SteadyPlc:
    """Every value written once, stamped a minute ago; nothing changes by itself."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server: Server | None = None
        self.nodes: dict[str, object] = {}
        self.stamp = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=60)

    @property
    def url(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}"

    async def start(self) -> None:
        quiet_asyncua()
        server = Server()
        await server.init()
        server.set_endpoint(self.url)
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        idx = await server.register_namespace("urn:steady-plc")
        assert idx == 2
        obj = await server.nodes.objects.add_object(ua.NodeId("cstr", idx), "cstr")
        for name, (value, vtype) in NODES.items():
            variant = ua.Variant(value, getattr(ua.VariantType, vtype))
            node = await obj.add_variable(ua.NodeId(f"cstr.{name}", idx), name, variant)
            await node.set_writable()
            await node.write_value(ua.DataValue(variant, SourceTimestamp=self.stamp, ServerTimestamp=self.stamp))
            self.nodes[name] = node
        await server.start()
        self.server = server

    async def source_timestamp(self, name: str) -> datetime.datetime:
        dv = await self.nodes[name].read_data_value()  # type: ignore[attr-defined]
        return dv.SourceTimestamp  # type: ignore[no-any-return]

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()


async def _run(tmp: Path, mode: str, freeze: bool) -> None:
    plc = SteadyPlc()
    await plc.start()
    replace = {r"^cycle_hz = 10.0": "cycle_hz = 20.0"}
    if mode == "subscribe":
        replace[r"^timeout_s = 2.0"] = 'timeout_s = 2.0\nmode = "subscribe"'
    if freeze:
        replace[r'^description = "reactor temperature"'] = 'description = "reactor temperature"\nfreeze_s = 1.0'
    gw = Gateway(load_config(write_config(tmp, policy=SHIPPED, url=plc.url, replace=replace)))
    task = asyncio.create_task(gw.run())
    sock = tmp / "control.sock"
    try:
        await wait_for(lambda: gw.loop is not None or task.done(), "the gateway to start")
        if task.done():
            task.result()
        if freeze:
            async def frozen() -> dict:
                st = await control_status(sock)
                return st if st.get("verdict") == "frozen:T" else {}
            st = await wait_for(frozen, "the frozen-sensor verdict on T", timeout=10)
            assert st["mode"] == "INHIBITED"
            assert (await control_status(sock)).get("mode") != "AUTO"
            return
        await wait_for(lambda: gw.loop.modes.mode.name == "READY", "READY on a steady plant", timeout=10)
        assert (await send_command(sock, {"cmd": "start", "actor": "test"}))["ok"]
        await wait_for(lambda: gw.loop.modes.mode.name == "AUTO", "AUTO", timeout=5)
        await asyncio.sleep(3.0)  # three times stale_ms (1000) and past the hold timeout (1000)
        st = await control_status(sock)
        assert st["mode"] == "AUTO" and st["verdict"] == "ok", (st["mode"], st["verdict"])
        assert st["stats"]["holds"] == 0
        assert await plc.source_timestamp("T") == plc.stamp  # the server never advanced it
    finally:
        gw.request_stop()
        await asyncio.wait_for(task, 15)
        await plc.stop()


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["poll", "subscribe"])
async def test_a_steady_value_from_a_live_server_is_fresh(tmp_path: Path, mode: str) -> None:
    await _run(tmp_path, mode, freeze=False)


@pytest.mark.anyio
async def test_freeze_s_reports_the_frozen_tag(tmp_path: Path) -> None:
    await _run(tmp_path, "poll", freeze=True)
