"""Commissioning a server the project has never seen: an asyncua server built here, with
its own namespace, string node ids, units, ranges and access levels (nothing like a twin),
and a small process behind it (a tank: the inlet valve fills it, the outlet drains it).

``discover`` writes the draft; ``config check`` names the open decisions; filled in, the
draft runs in ``monitor`` (the server sees no write at all), then in ``pid`` (AUTO, the
level held at its setpoint), without a line of code."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from asyncua import Server, ua
from asyncua.common.callback import CallbackType, ServerItemCallback

from edgewarden.gateway.app import Gateway
from edgewarden.gateway.audit.verify import iter_records
from edgewarden.gateway.cli import main
from edgewarden.gateway.config import load_config
from edgewarden.simulators.harness import free_port, wait_for
from edgewarden.simulators.peers import OpcUaServer, opcua_certs
from tests.fault.harness import running_gateway

NS = "urn:acme:line7"


class TankPlc:
    """dLevel/dt = 1.0·valve − 0.4·level (% per s): the level settles at 2.5 × the valve."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server = Server()
        self.external_writes = 0
        self.nodes: dict[str, object] = {}

    @property
    def url(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}"

    async def start(self) -> None:
        s = self.server
        await s.init()
        s.set_endpoint(self.url)
        idx = await s.register_namespace(NS)
        line = await s.nodes.objects.add_folder(ua.NodeId("Line7", idx), "Line7")
        tank = await line.add_object(ua.NodeId("Line7/Tank1", idx), "Tank1")
        plc = await line.add_object(ua.NodeId("Line7/PLC", idx), "PLC")

        async def var(parent, name: str, value, vtype, *, units: str = "", rng=None, writable=False):  # noqa: ANN001, ANN202
            node = await parent.add_variable(ua.NodeId(f"{parent.nodeid.Identifier}/{name}", idx), name,
                                             ua.Variant(value, vtype))
            if units:
                await node.add_property(0, "EngineeringUnits", ua.EUInformation(
                    DisplayName=ua.LocalizedText(units), Description=ua.LocalizedText(units), UnitId=-1),
                    varianttype=ua.VariantType.ExtensionObject)
            if rng is not None:
                await node.add_property(0, "EURange", ua.Range(Low=rng[0], High=rng[1]),
                                        varianttype=ua.VariantType.ExtensionObject)
            if writable:
                await node.set_writable()
            self.nodes[name] = node
            return node

        await var(tank, "Level", 10.0, ua.VariantType.Double, units="%", rng=(0.0, 100.0))
        await var(tank, "LevelSetpoint", 50.0, ua.VariantType.Double, units="%", rng=(0.0, 100.0))
        await var(tank, "InletValve", 4.0, ua.VariantType.Double, units="%", rng=(0.0, 100.0), writable=True)
        await var(tank, "Temperature", 21.5, ua.VariantType.Float, units="°C", rng=(-20.0, 120.0))
        await var(plc, "Watchdog", 0, ua.VariantType.UInt32, writable=True)
        await var(plc, "AlarmCount", 0, ua.VariantType.Int16)
        await var(plc, "Firmware", "v4.2-acme", ua.VariantType.String)

        def count(event: ServerItemCallback, _dispatcher: object) -> None:
            if event.is_external:
                self.external_writes += len(event.request_params.NodesToWrite)

        s.subscribe_server_callback(CallbackType.PreWrite, count)
        await s.start()

    async def scan(self, stop: asyncio.Event) -> None:
        dt = 0.02
        level, valve = self.nodes["Level"], self.nodes["InletValve"]
        while not stop.is_set():
            v = await valve.read_value()
            lvl = await level.read_value()
            await level.write_value(ua.Variant(min(max(lvl + (1.0 * v - 0.4 * lvl) * dt, 0.0), 100.0),
                                               ua.VariantType.Double))
            await asyncio.sleep(dt)

    async def value(self, name: str) -> float:
        return float(await self.nodes[name].read_value())


@contextlib.asynccontextmanager
async def tank_plc() -> AsyncIterator[TankPlc]:
    plc = TankPlc()
    await plc.start()
    stop = asyncio.Event()
    scan = asyncio.create_task(plc.scan(stop))
    try:
        yield plc
    finally:
        stop.set()
        await scan
        await plc.server.stop()


def decide(draft: str) -> str:
    """What the commissioning engineer decides: the valve's safe value (closed), the
    heartbeat as found, what the policy sees; a free metrics port for the test."""
    text = re.sub(r"^# safe = \.\.\. .*$", "safe = 0.0", draft, flags=re.M)
    text = re.sub(r"^observations = .*$", 'observations = ["Level", "LevelSetpoint"]', text, flags=re.M)
    return text + "\n[metrics]\nport = 0\n"


@pytest.mark.anyio
async def test_discover_monitor_then_pid_on_a_server_never_seen(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    async with tank_plc() as plc:
        draft = tmp_path / "plant.toml"
        assert await asyncio.to_thread(main, ["discover", plc.url, "-o", str(draft)]) == 0
        assert "6 tag(s), 2 writable" in capsys.readouterr().err
        text = draft.read_text()
        assert 'node = "ns=2;s=Line7/Tank1/Level"' in text and 'units = "%"' in text and "range = [0.0, 100.0]" in text
        assert 'units = "°C"' in text and 'datatype = "float"' in text and 'datatype = "int16"' in text
        assert 'heartbeat_tag = "Watchdog"' in text and 'actions = ["InletValve"]' in text
        assert "Line7/PLC/Firmware (ns=2;s=Line7/PLC/Firmware): data type" in text  # skipped, with the reason
        assert plc.external_writes == 0  # browsing writes nothing
        assert await asyncio.to_thread(main, ["discover", plc.url, "--root", "ns=2;s=Line7/PLC"]) == 0
        out = capsys.readouterr()
        assert "[tags.Watchdog]" in out.out and "[tags.Level]" not in out.out
        assert "2 tag(s), 1 writable" in out.err and "below ns=2;s=Line7/PLC" in out.err
        assert await asyncio.to_thread(main, ["discover", plc.url, "--max-nodes", "5"]) == 0
        out = capsys.readouterr()
        assert "1 tag(s)" in out.err and "stopped early: --max-nodes 5 reached" in out.err  # root, 3 objects, Level
        assert "# The browse stopped early: --max-nodes 5 reached" in out.out

        assert main(["config", "check", str(draft)]) == 78  # the open decision, named
        assert "plant.toml: safety.actions.InletValve.safe: required key is missing" in capsys.readouterr().err

        draft.write_text(decide(text))
        assert main(["config", "check", str(draft)]) == 0, capsys.readouterr().err
        async with running_gateway(draft) as gw:
            await wait_for(lambda: gw.loop.modes.mode.name == "READY", "READY in monitor")
            await asyncio.sleep(1.0)
        assert plc.external_writes == 0  # monitor: not an action, not a heartbeat
        assert await plc.value("Watchdog") == 0

        pid = draft.read_text().replace('kind = "monitor"', 'kind = "pid"') + (
            '\n[policy.pid.InletValve]\npv = "Level"\nsetpoint = "LevelSetpoint"\nkp = 2.0\nki = 1.0\n')
        draft.write_text(pid)
        assert main(["config", "check", str(draft)]) == 0, capsys.readouterr().err
        async with running_gateway(draft) as gw:
            await wait_for(lambda: gw.loop.modes.mode.name == "READY", "READY under pid")
            assert await asyncio.to_thread(main, ["start", "-c", str(draft), "--operator", "commissioning"]) == 0
            await asyncio.sleep(8.0)
            assert gw.loop.modes.mode.name == "AUTO"
            level, sp = await plc.value("Level"), await plc.value("LevelSetpoint")
            assert abs(level - sp) < 2.0, (level, sp)
            assert await plc.value("Watchdog") > 0 and plc.external_writes > 100
        cycles = [r.payload for r in iter_records(tmp_path / "var" / "audit") if r.payload["kind"] == "cycle"]
        auto = [c for c in cycles if c["mode"] == "AUTO"]
        assert auto and all(c["ack"] == ["ok", "ok"] for c in auto[-10:])
        print(f"level {level:.2f} % against setpoint {sp:.2f} % after 8 s of pid; {len(auto)} AUTO cycles")


@pytest.mark.anyio
async def test_a_read_only_login_is_enough_for_monitor_not_for_control(tmp_path: Path) -> None:
    """A node the server lets others write, but not this login (UserAccessLevel): the draft
    says so; monitor runs with that login; a writing kind is refused at start, naming it."""
    from edgewarden.gateway.errors import AccessError
    from edgewarden.simulators.peers import OpcUaServer

    srv = OpcUaServer(user_read_only=("sp", "u"))
    await srv.start()
    try:
        draft = tmp_path / "plant.toml"
        assert await asyncio.to_thread(main, ["discover", srv.url, "-o", str(draft)]) == 0
        text = draft.read_text()
        block = text[text.index("[tags.sp]"):text.index("[tags.sp]") + 300]
        assert "writable = true   # writable on the server, not by this login" in block
        assert "writable = true\n" in text[text.index("[tags.x]"):]  # x: this login may write it
        text = re.sub(r"\[safety\.actions\.(?:x|f|i|u)\]\n(?:#.*\n)*", "", text)
        text = re.sub(r"^# min = \.\.\. .*$", "min = 0.0", text, flags=re.M)
        text = re.sub(r"^# max = \.\.\. .*$", "max = 100.0", text, flags=re.M)
        text = re.sub(r"^# safe = \.\.\. .*$", "safe = 10.0", text, flags=re.M)
        text = re.sub(r"^# heartbeat_tag = .*$", 'heartbeat_tag = "u"', text, flags=re.M)
        text = re.sub(r"^actions = .*$", 'actions = ["sp"]', text, flags=re.M)
        text = re.sub(r"^observations = .*$", 'observations = ["x", "f"]', text, flags=re.M)
        draft.write_text(text + "\n[metrics]\nport = 0\n")
        assert main(["config", "check", str(draft)]) == 0
        async with running_gateway(draft) as gw:
            await wait_for(lambda: gw.loop.modes.mode.name == "READY", "READY in monitor, read-only login")
        draft.write_text(draft.read_text().replace('kind = "monitor"', 'kind = "hold"'))
        with pytest.raises(AccessError, match=r"write 2 tag\(s\).*tags\.u node.*tags\.sp node 'ns=2;s=test\.sp'"):
            await Gateway(load_config(draft)).run()
    finally:
        await srv.stop()


def test_a_refused_connection_names_discovers_flags_not_config_keys(capsys: pytest.CaptureFixture[str]) -> None:
    """The connection's schema speaks in config keys; a discover user is told the flags."""
    assert main(["discover", "opc.tcp://10.1.2.3:4840"]) == 78  # refused before any packet
    err = capsys.readouterr().err
    assert "or --allow-insecure to accept the risk" in err and "--security-policy Basic256Sha256 with --certificate, " \
        "--private-key and --server-certificate" in err and "allow_insecure" not in err and "top level" not in err
    assert main(["discover", "opc.tcp://127.0.0.1:4840", "--security-policy", "Basic256Sha256"]) == 78
    assert "needs --certificate, --private-key, --server-certificate (the server certificate is pinned" \
        in capsys.readouterr().err
    assert main(["discover", "opc.tcp://127.0.0.1:4840", "--timeout", "0"]) == 78
    assert "discover: --timeout: Input should be greater than 0" in capsys.readouterr().err


@pytest.mark.anyio
async def test_discover_logs_in_with_a_user_certificate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A server whose only login is a user certificate: discover browses it, and the draft
    keeps that identity; a certificate the server does not know is refused by name."""
    c = await opcua_certs(tmp_path)
    srv = OpcUaServer(secure=(c["server_cert"], c["server_key"]), user_certs=(c["client_cert"],))
    await srv.start()
    secure = ["--security-policy", "Basic256Sha256", "--certificate", c["client_cert"],
              "--private-key", c["client_key"], "--server-certificate", c["server_cert"]]
    draft = tmp_path / "plant.toml"
    try:
        argv = ["discover", srv.url, *secure, "--user-certificate", c["client_cert"],
                "--user-private-key", c["client_key"], "-o", draft]
        assert await asyncio.to_thread(main, [str(a) for a in argv]) == 0, capsys.readouterr().err
        text = draft.read_text()
        assert f'user_certificate = "{c["client_cert"].resolve()}"' in text and "username" not in text
        argv = ["discover", srv.url, *secure, "--user-certificate", c["other_cert"],
                "--user-private-key", c["other_key"], "-o", tmp_path / "other.toml"]
        assert await asyncio.to_thread(main, [str(a) for a in argv]) != 0
        assert "refused" in capsys.readouterr().err and not (tmp_path / "other.toml").exists()
        assert await asyncio.to_thread(main, ["discover", srv.url, "--user-certificate", str(c["client_cert"])]) == 78
        assert "--user-certificate and --user-private-key go together" in capsys.readouterr().err
    finally:
        await srv.stop()


@pytest.mark.anyio
async def test_discover_escapes_what_a_hostile_server_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Browse names, descriptions and node ids come from the server: a line break in one
    must not end a comment (or a string) and start a live table of the draft."""
    inject = '\n[metrics]\nhost = "0.0.0.0"\nport = 9\n'
    port = free_port()
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}")
    idx = await server.register_namespace(NS)
    folder = await server.nodes.objects.add_folder(ua.NodeId("Evil", idx), "Evil")
    await folder.add_variable(ua.NodeId("Evil/Text" + inject, idx), "Text" + inject, ua.Variant("x", ua.VariantType.String))
    level = await folder.add_variable(ua.NodeId("Evil/Level" + inject, idx), "Level" + inject, 1.0)
    await level.write_attribute(ua.AttributeIds.Description,
                                ua.DataValue(ua.Variant(ua.LocalizedText("d" + inject), ua.VariantType.LocalizedText)))
    async with server:
        draft = tmp_path / "plant.toml"
        assert await asyncio.to_thread(main, ["discover", f"opc.tcp://127.0.0.1:{port}", "-o", str(draft)]) == 0
    text = draft.read_text()
    import tomllib

    parsed = tomllib.loads(text)
    assert "metrics" not in parsed  # no live table came from the server's names
    assert not any(line.startswith(("[metrics]", "host =", "port =")) for line in text.splitlines())
    assert '\\n[metrics]\\nhost = \\"0.0.0.0\\"' in text  # the names kept, escaped, visible
    (tag,) = [t for t in parsed["tags"].values() if t.get("datatype") == "double"]
    assert tag["node"].endswith(inject)  # a string value keeps the server's id exactly
    capsys.readouterr()


@pytest.mark.anyio
async def test_an_array_node_is_skipped_with_the_reason_not_drafted_as_a_scalar(tmp_path: Path) -> None:
    """A Double[100] used to be drafted as a scalar double observation; config check passed
    it and run e-stopped on cycle 0 with "BAD quality" while the server said Good."""
    port = free_port()
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}")
    idx = await server.register_namespace(NS)
    folder = await server.nodes.objects.add_folder(ua.NodeId("Line", idx), "Line")
    await folder.add_variable(ua.NodeId("Line/Temp", idx), "Temp", 350.0)
    profile = await folder.add_variable(ua.NodeId("Line/Profile", idx), "Profile",
                                        ua.Variant([1.0] * 100, ua.VariantType.Double))
    await profile.write_value_rank(1)
    await profile.write_array_dimensions([100])
    loose = await folder.add_variable(ua.NodeId("Line/Loose", idx), "Loose", ua.Variant([1.0, 2.0], ua.VariantType.Double))
    await loose.write_value_rank(-3)  # ScalarOrOneDimension: only the value tells
    async with server:
        draft = tmp_path / "plant.toml"
        assert await asyncio.to_thread(main, ["discover", f"opc.tcp://127.0.0.1:{port}", "-o", str(draft)]) == 0
    text = draft.read_text()
    import tomllib

    nodes = [t["node"] for t in tomllib.loads(text)["tags"].values()]
    assert nodes == [f"ns={idx};s=Line/Temp"], nodes
    assert "Line/Profile" in text and "an array of double (ValueRank 1)" in text
    assert "Line/Loose" in text and "an array of double (its value is a list)" in text
