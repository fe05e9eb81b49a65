"""Modbus client against an independent pymodbus server: data types and word order,
exception codes, restart, a hung device beside a live one, refused connection, TLS."""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path

import numpy as np
import pytest

from edgewarden.data import EXAMPLES, MODELS
from edgewarden.gateway.config import ModbusConnection, TagSpec, load_config
from edgewarden.gateway.errors import TransportError
from edgewarden.gateway.io.composite import CompositeTransport
from edgewarden.gateway.io.modbus.codec import encode
from edgewarden.gateway.io.modbus.transport import ModbusTransport
from edgewarden.gateway.io.tags import Quality, Snapshot, TagMap
from edgewarden.gateway.io.transport import plan_writes
from edgewarden.simulators.peers import HungServer, ModbusServer, free_port, tls_files

ROOT = Path(__file__).resolve().parents[2]


def _specs(conn: str = "m") -> dict[str, TagSpec]:
    return {
        f"{conn}_f": TagSpec(connection=conn, table="holding", address=0, datatype="float32", writable=True,
                             range=(0.0, 500.0)),
        f"{conn}_i": TagSpec(connection=conn, table="holding", address=2, datatype="int16", scale=0.1),
        f"{conn}_u": TagSpec(connection=conn, table="input", address=4, datatype="uint32", word_order="little"),
        f"{conn}_c": TagSpec(connection=conn, table="coil", address=1, datatype="bool", writable=True),
        f"{conn}_d": TagSpec(connection=conn, table="discrete", address=2, datatype="bool"),
        f"{conn}_hr": TagSpec(connection=conn, table="holding", address=3, datatype="uint16", unit=2),
        f"{conn}_ro": TagSpec(connection=conn, table="holding", address=10, datatype="float32"),
    }


def _tagmap(specs: dict[str, TagSpec]) -> TagMap:
    return TagMap(specs=specs, readable=tuple(specs), index={n: i for i, n in enumerate(specs)})


def _conn(port: int, **kw: object) -> ModbusConnection:
    return ModbusConnection(type="modbus", host="127.0.0.1", port=port, timeout_s=0.3, reconnect_min_s=0.05,
                            reconnect_max_s=0.3, **kw)  # type: ignore[arg-type]


async def _until(pred, timeout: float = 8.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not await pred():
        assert time.monotonic() < end, "condition not reached in time"
        await asyncio.sleep(0.05)


@pytest.mark.anyio
async def test_reads_writes_types_exceptions_and_refusals() -> None:
    srv = ModbusServer()
    await srv.start()
    specs = _specs()
    srv.set_regs("holding", 0, encode(specs["m_f"], 12.5) + [(-123) & 0xFFFF])
    srv.set_regs("input", 4, encode(specs["m_u"], 70000))
    srv.set_regs("discrete", 2, [1])
    srv.set_regs("holding", 3, [777], unit=2)
    tags = _tagmap(specs)
    t = ModbusTransport(tags, {"m": _conn(srv.port)})
    # holding 0-3 of unit 1 is one block (float32 + int16); nothing bridges the gap to 10
    blocks = [(b.unit, b.table, b.start, b.count) for b in t.blocks("m")]
    assert (1, "holding", 0, 3) in blocks and (1, "holding", 10, 2) in blocks
    try:
        await t.connect()
        snap = Snapshot(len(tags.readable))
        await t.read(snap)
        assert snap.values.tolist() == pytest.approx([12.5, -12.3, 70000.0, 0.0, 1.0, 777.0, 0.0])
        assert (snap.quality == Quality.GOOD).all()
        await t.write(plan_writes(specs, ["m_f", "m_c"]), [250.0, 1.0])
        assert srv.get_regs("holding", 0, 2) == encode(specs["m_f"], 250.0) and srv.get_regs("coil", 1, 1) == [1]
        # never reaches the wire: out of range, not writable
        with pytest.raises(TransportError, match="outside its valid range"):
            await t.write(plan_writes(specs, ["m_f"]), [501.0])
        with pytest.raises(Exception, match="not marked writable"):
            plan_writes(specs, ["m_ro"])
        assert srv.get_regs("holding", 0, 2) == encode(specs["m_f"], 250.0)
        # exception response -> BAD for those tags, the connection stays up
        from pymodbus.constants import ExcCodes
        srv.context.fail_with = ExcCodes.DEVICE_FAILURE
        await t.read(snap)
        assert (snap.quality == Quality.BAD).all() and np.isnan(snap.values).all()
        assert "DEVICE_FAILURE" in t.health()["m"].last_error and t.health()["m"].connected
        with pytest.raises(TransportError, match="DEVICE_FAILURE"):
            await t.write(plan_writes(specs, ["m_f"]), [1.0])
        srv.context.fail_with = None
        await t.read(snap)
        assert (snap.quality == Quality.GOOD).all()
    finally:
        await t.close()
        await srv.stop()


@pytest.mark.anyio
async def test_restart_and_hung_device_beside_a_live_one() -> None:
    srv = ModbusServer()
    await srv.start()
    hung = HungServer()
    await hung.start()
    specs = {**_specs("a"), **_specs("h")}
    tags = _tagmap(specs)
    t = ModbusTransport(tags, {"a": _conn(srv.port), "h": _conn(hung.port)})
    a = tags.indices([n for n in tags.readable if n.startswith("a_")])
    h = tags.indices([n for n in tags.readable if n.startswith("h_")])
    snap = Snapshot(len(tags.readable))
    try:
        await t.connect()
        for _ in range(3):
            t0 = time.monotonic()
            await t.read(snap)
            assert time.monotonic() - t0 < 0.6  # bounded by the hung device's timeout, not more
            assert (snap.quality[a] == Quality.GOOD).all()
            assert (snap.quality[h] == Quality.NO_DATA).all()
        # kill and restart the live server on the same port
        await srv.stop()

        async def down() -> bool:
            await t.read(snap)
            return not t.health()["a"].connected
        await _until(down)
        assert (snap.quality[a] == Quality.NO_DATA).all() and np.isnan(snap.values[a]).all()
        assert t.health()["a"].state == "reconnecting" and t.health()["a"].last_error
        srv2 = ModbusServer(port=srv.port)
        await srv2.start()
        try:
            async def up() -> bool:
                await t.read(snap)
                return bool((snap.quality[a] == Quality.GOOD).all())
            await _until(up)
            assert t.health()["a"].reconnects >= 1 and t.health()["a"].state == "up"
        finally:
            await srv2.stop()
    finally:
        await t.close()
        await hung.stop()


@pytest.mark.anyio
async def test_refused_connection_is_a_clear_error() -> None:
    specs = _specs()
    t = ModbusTransport(_tagmap(specs), {"m": _conn(free_port())})
    with pytest.raises(TransportError, match="cannot reach Modbus connection 'm'"):
        await t.connect()


@pytest.mark.anyio
async def test_tls_verifies_the_server(tmp_path: Path) -> None:
    f = tls_files(tmp_path)
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    sctx.load_cert_chain(str(f["cert"]), str(f["key"]))
    srv = ModbusServer(sslctx=sctx)
    await srv.start()
    specs = _specs()
    try:
        t = ModbusTransport(_tagmap(specs), {"m": _conn(srv.port, tls=True, ca_file=f["ca"])})
        await t.connect()
        snap = Snapshot(len(specs))
        await t.read(snap)
        assert (snap.quality == Quality.GOOD).all()
        await t.close()
        wrong = ModbusTransport(_tagmap(specs), {"m": _conn(srv.port, tls=True, ca_file=f["other_ca"])})
        with pytest.raises(TransportError, match="'m'"):
            await wrong.connect()
    finally:
        await srv.stop()


@pytest.mark.anyio
async def test_example_config_against_the_twin(tmp_path: Path) -> None:
    from edgewarden.simulators.twin import Twin

    twin = Twin("cstr", opcua=("127.0.0.1", 0), modbus=("127.0.0.1", 0), scan_ms=10, watchdog_ms=5000, seed=0)
    await twin.start()
    try:
        text = (EXAMPLES / "cstr_modbus.toml").read_text()
        text = text.replace("port = 5020", f"port = {twin.modbus_port}")
        text = text.replace('path = "../models/cstr_baseline.onnx"',
                            f'path = "{MODELS / "cstr_baseline.onnx"}"')
        cfg = tmp_path / "g.toml"
        cfg.write_text(text)
        s = load_config(cfg).settings
        tags = TagMap.from_settings(s)
        t = CompositeTransport(tags, dict(s.connections))
        await t.connect()
        snap = Snapshot(len(tags.readable))
        await t.read(snap)
        good = {n: snap.values[tags.index[n]] for n in tags.readable if snap.quality[tags.index[n]] == Quality.GOOD}
        assert set(good) == set(tags.readable)
        assert good["T"] == pytest.approx(twin.plc.image["T"], abs=5.0)
        await t.write(plan_writes(dict(s.tags), ["coolant_flow_sp", "feed_flow_sp", "heartbeat"]),
                      [123.0, 50.0, 70000.0])
        await asyncio.sleep(0.05)
        assert twin.plc.image["coolant_flow_sp"] == pytest.approx(123.0)
        await t.close()
    finally:
        await twin.stop()


@pytest.mark.anyio
async def test_the_reconnect_loop_survives_an_exception_nobody_anticipated() -> None:
    """A reconnect attempt that fails in a way no comms error describes (a library that
    cannot decode a peer's handshake) used to end the reconnect task silently: the link
    stayed down for good. Now it is a failed attempt, named in last_error."""

    class Flaky(ModbusTransport):
        failures = 0

        async def _open(self, link):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN202
            if self.failures < 2 and link.health.reconnects == 0 and link.client is None and self._armed:
                self.failures += 1
                raise RuntimeError("a handshake nobody anticipated")
            await super()._open(link)

    srv = ModbusServer()
    await srv.start()
    tags = _tagmap(_specs("a"))
    t = Flaky(tags, {"a": _conn(srv.port)})
    t._armed = False  # noqa: SLF001 - the first connect is a good one
    snap = Snapshot(len(tags.readable))
    try:
        await t.connect()
        t._armed = True  # noqa: SLF001
        await srv.stop()

        async def down() -> bool:
            await t.read(snap)
            return not t.health()["a"].connected
        await _until(down)
        srv2 = ModbusServer(port=srv.port)
        await srv2.start()
        try:
            async def up() -> bool:
                await t.read(snap)
                return bool((snap.quality == Quality.GOOD).all())
            await _until(up)
            assert t.failures == 2 and t.health()["a"].reconnects == 1
        finally:
            await srv2.stop()
    finally:
        await t.close()
