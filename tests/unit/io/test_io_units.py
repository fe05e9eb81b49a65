"""Tag map and planning without a network: config validation, Modbus codecs and blocks,
composite dispatch and write refusals, the link metrics."""

from __future__ import annotations

import math

import pytest
from pydantic import TypeAdapter, ValidationError

from edgewarden.data import EXAMPLES
from edgewarden.gateway.config import ConnectionSpec, ModbusConnection, OpcUaConnection, TagSpec
from edgewarden.gateway.config_checks import source_problems
from edgewarden.gateway.errors import TransportError
from edgewarden.gateway.io.composite import CompositeTransport
from edgewarden.gateway.io.modbus.codec import decode, encode, plan_blocks
from edgewarden.gateway.io.tags import TagMap
from edgewarden.gateway.io.transport import LinkHealth, plan_writes
from edgewarden.gateway.ops.metrics import Metrics, watch_links


def test_connection_union_on_type() -> None:
    ta = TypeAdapter(ConnectionSpec)
    assert isinstance(ta.validate_python({"url": "opc.tcp://127.0.0.1:4840"}), OpcUaConnection)
    assert isinstance(ta.validate_python({"type": "modbus", "host": "h"}), ModbusConnection)
    with pytest.raises(ValidationError, match="url"):
        ta.validate_python({"type": "opcua", "host": "h"})
    with pytest.raises(ValidationError, match="ca_file"):
        ta.validate_python({"type": "modbus", "host": "h", "tls": True})


def test_tag_source_fields() -> None:
    with pytest.raises(ValidationError, match="needs a source"):
        TagSpec(connection="c")
    with pytest.raises(ValidationError, match="not both"):
        TagSpec(connection="c", node="ns=2;s=x", table="holding", address=1)
    with pytest.raises(ValidationError, match="datatype bool"):
        TagSpec(connection="c", table="coil", address=1, datatype="float32")
    mb = ModbusConnection(type="modbus", host="h")
    ua = OpcUaConnection(url="opc.tcp://127.0.0.1:1")
    assert source_problems("t", TagSpec(connection="c", node="ns=2;s=x"), mb)
    assert source_problems("t", TagSpec(connection="c", table="holding", address=0), ua)
    assert source_problems("t", TagSpec(connection="c", table="input", address=0, writable=True), mb)
    assert not source_problems("t", TagSpec(connection="c", table="holding", address=0, writable=True), mb)


@pytest.mark.parametrize("datatype,value", [("int16", -5), ("uint16", 65535), ("int32", -70000),
                                            ("uint32", 4_000_000_000), ("float32", 1.5), ("double", math.pi)])
@pytest.mark.parametrize("word_order", ["big", "little"])
@pytest.mark.parametrize("byte_order", ["big", "little"])
def test_codec_round_trip(datatype: str, value: float, word_order: str, byte_order: str) -> None:
    spec = TagSpec(connection="c", table="holding", address=0, datatype=datatype,  # type: ignore[arg-type]
                   word_order=word_order, byte_order=byte_order)  # type: ignore[arg-type]
    assert decode(spec, encode(spec, value)) == value


def test_codec_known_layouts_and_wrap() -> None:
    big = TagSpec(connection="c", table="holding", address=0, datatype="float32")
    little = TagSpec(connection="c", table="holding", address=0, datatype="float32", word_order="little")
    assert encode(big, 1.0) == [0x3F80, 0x0000] and encode(little, 1.0) == [0x0000, 0x3F80]
    counter = TagSpec(connection="c", table="holding", address=0, datatype="uint16")
    assert encode(counter, 65537) == [1]
    bounded = TagSpec(connection="c", table="holding", address=0, datatype="uint16", range=(0, 10))
    with pytest.raises(TransportError):
        encode(bounded, 70000)


def test_blocks_merge_contiguous_only() -> None:
    specs = {
        "a": TagSpec(connection="c", table="holding", address=0, datatype="float32"),
        "b": TagSpec(connection="c", table="holding", address=2, datatype="uint16"),
        "c": TagSpec(connection="c", table="holding", address=5, datatype="uint16"),
        "d": TagSpec(connection="c", table="input", address=0, datatype="uint16"),
        "e": TagSpec(connection="c", table="holding", address=0, datatype="uint16", unit=2),
    }
    blocks = plan_blocks(specs, list(specs), list(range(5)), max_block=120)
    got = sorted((b.unit, b.table, b.start, b.count, tuple(b.slots)) for b in blocks)
    assert got == [(1, "holding", 0, 3, (0, 1)), (1, "holding", 5, 1, (2,)), (1, "input", 0, 1, (3,)),
                   (2, "holding", 0, 1, (4,))]
    many = {f"r{i}": TagSpec(connection="c", table="input", address=i, datatype="uint16") for i in range(64)}
    blocks = plan_blocks(many, list(many), list(range(64)), max_block=40)
    assert [(b.start, b.count) for b in blocks] == [(0, 40), (40, 24)]


@pytest.mark.anyio
async def test_composite_refuses_before_any_wire() -> None:
    specs = {"o": TagSpec(connection="u", node="ns=2;s=o", writable=True, range=(0, 1)),
             "m": TagSpec(connection="m", table="holding", address=0, datatype="uint16", writable=True),
             "r": TagSpec(connection="m", table="holding", address=1, datatype="uint16")}
    tags = TagMap(specs=specs, readable=tuple(specs), index={n: i for i, n in enumerate(specs)})
    t = CompositeTransport(tags, {"u": OpcUaConnection(url="opc.tcp://127.0.0.1:1"),
                                  "m": ModbusConnection(type="modbus", host="127.0.0.1", port=1)})
    assert len(t.parts) == 2 and set(t.health()) == {"u", "m"}
    with pytest.raises(TransportError, match="outside its valid range"):
        await t.write(plan_writes(specs, ["o", "m"]), [2.0, 1.0])
    with pytest.raises(TransportError, match="not a finite"):
        await t.write(plan_writes(specs, ["o", "m"]), [0.5, math.nan])
    with pytest.raises(Exception, match="not marked writable"):
        plan_writes(specs, ["r"])


def test_link_metrics() -> None:
    from prometheus_client import generate_latest

    m = Metrics()
    watch_links(m, lambda: {"plc1": LinkHealth(connected=True, state="up", reconnects=2, rtt_s=0.001,
                                                         last_error="x")})
    text = generate_latest(m.registry).decode()
    assert 'edgewarden_link_up{connection="plc1"} 1.0' in text
    assert 'edgewarden_link_reconnects_total{connection="plc1"} 2.0' in text
    assert 'edgewarden_link_error_info{connection="plc1",error="x",state="up"} 1.0' in text


def test_mixed_config_and_source_errors_name_file_and_key(tmp_path) -> None:  # type: ignore[no-untyped-def]

    from edgewarden.gateway.config import load_config
    from edgewarden.gateway.errors import ConfigError

    example = EXAMPLES / "cstr.toml"
    extra = '''
[connections.rio]
type = "modbus"
host = "127.0.0.1"
port = 5020

[tags.flow_mb]
connection = "rio"
table = "input"
address = 6
datatype = "float32"

[tags.bad_node]
connection = "rio"
node = "ns=2;s=x"

[tags.bad_write]
connection = "rio"
table = "discrete"
address = 0
datatype = "bool"
writable = true

[tags.bad_ua]
connection = "plc1"
table = "holding"
address = 0
'''
    text = example.read_text().replace("[policy]", extra + "\n[policy]", 1)
    text = text.replace('path = "../models/cstr_baseline.onnx"',
                        f'path = "{example.parent.parent / "models" / "cstr_baseline.onnx"}"')
    cfg = tmp_path / "mixed.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    msg = str(err.value)
    assert f"{cfg}: tags.bad_node: connection 'rio' is Modbus" in msg
    assert f"{cfg}: tags.bad_write.writable: a Modbus discrete table is read-only" in msg
    assert f"{cfg}: tags.bad_ua: connection 'plc1' is OPC UA" in msg
    assert "flow_mb" not in msg
    good = text.split("[tags.bad_node]")[0] + "[policy]" + text.split("[policy]", 1)[1]
    cfg.write_text(good)
    s = load_config(cfg).settings
    assert isinstance(s.connections["rio"], ModbusConnection) and isinstance(s.connections["plc1"], OpcUaConnection)
    tags = TagMap.from_settings(s)
    t = CompositeTransport(tags, dict(s.connections))
    assert len(t.parts) == 2


def test_write_outcomes_merge_per_tag() -> None:
    """Sub-writes' outcomes land on their own tags: a link's (whole-plan list), a
    composite part's (its own positions), and a plain failure."""
    from edgewarden.gateway.io.transport import WriteError, merge_outcomes

    assert merge_outcomes(4, [([0, 1], None), ([2, 3], None)]) is None
    whole = WriteError("link b timed out", ["ok", "ok", "timeout", "timeout", "ok"])
    own = WriteError("refused", ["failed: BadOutOfRange"])
    err = merge_outcomes(5, [([0, 1], None), ([2, 3], whole), ([4], own)])
    assert err is not None and err.outcomes == ["ok", "ok", "timeout", "timeout", "failed: BadOutOfRange"]
    assert str(err) == "link b timed out"
    err = merge_outcomes(3, [([0], OSError("gone")), ([1, 2], None)])
    assert err is not None and err.outcomes == ["failed: gone", "ok", "ok"]
