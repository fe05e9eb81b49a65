"""The cycle's fast I/O paths do exactly what their references do: the OPC UA batch fill
and subscription cache against codec.decode, the pre-encoded OPC UA Read request against
asyncua's encoding, the Modbus block decoder and 16-bit encoder against the pymodbus-based
reference codec, and the write path's registers against encode."""

from __future__ import annotations

import dataclasses
import random
import struct
from datetime import UTC, datetime

import numpy as np
import pytest
from asyncua import ua
from hypothesis import given
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse, ReadInputRegistersResponse
from hypothesis import strategies as st

from edgewarden.gateway.config import ModbusConnection, OpcUaConnection, TagSpec
from edgewarden.gateway.errors import TransportError
from edgewarden.gateway.io.modbus.codec import encode, encode_reference
from edgewarden.gateway.io.modbus.transport import ModbusTransport
from edgewarden.gateway.io.opcua import codec
from edgewarden.gateway.io.opcua.request import ReadRequest, fast_path_supported
from edgewarden.gateway.io.opcua.transport import OpcUaTransport
from edgewarden.gateway.io.tags import Quality, Snapshot, TagMap
from edgewarden.gateway.io.transport import plan_writes

FIELDS = ("values", "quality", "source_ts", "recv_mono")


def tagmap(specs: dict[str, TagSpec]) -> TagMap:
    return TagMap(specs=specs, readable=tuple(specs), index={k: i for i, k in enumerate(specs)})


def same(a: Snapshot, b: Snapshot) -> None:
    for f in FIELDS:
        assert np.array_equal(getattr(a, f), getattr(b, f), equal_nan=True), f


def test_opcua_fill_matches_the_per_tag_path() -> None:
    n = 40
    # every 8th tag from the 2nd is bool (served a Boolean: good); the 6th of 8 is numeric and
    # served a Boolean too (BAD), as is a number on a bool tag
    specs = {f"m{i}": TagSpec(connection="u", node=f"ns=2;s=m{i}", scale=0.5 if i % 2 else 1.0, offset=i,
                              datatype="bool" if i % 8 in (1, 2) else "double")  # type: ignore[arg-type]
             for i in range(n)}
    link = OpcUaTransport(tagmap(specs), {"u": OpcUaConnection(url="opc.tcp://127.0.0.1:1")})._links["u"]
    now = datetime.now(UTC)
    codes = [ua.StatusCodes.Good, ua.StatusCodes.BadSensorFailure, ua.StatusCodes.UncertainSensorNotAccurate,
             ua.StatusCodes.GoodClamped, 0xC0000000]
    dvs = [ua.DataValue(ua.Variant(v, t), StatusCode=ua.StatusCode(codes[i % len(codes)]),
                        SourceTimestamp=now if i % 3 else None, ServerTimestamp=now if i % 4 else None)
           for i, (v, t) in enumerate([(1.5, ua.VariantType.Double), (True, ua.VariantType.Boolean),
                                       (-7, ua.VariantType.Int32), (2**31, ua.VariantType.UInt32)] * (n // 4))]
    a, b, c = Snapshot(n), Snapshot(n), Snapshot(n)
    codec.fill(a, link.read_slots, link.read_index, link.scale, link.offset, dvs, 3.0, link.booleans)
    codec.fill_each(b, link.read_slots, link.scale, link.offset, dvs, 3.0, link.booleans)
    same(a, b)
    assert a.quality[5] == Quality.BAD and a.quality[10] == Quality.BAD  # a Boolean on a double tag; Int32 on bool
    assert a.quality[33] == Quality.GOOD and a.quality[8] == Quality.GOOD  # a Boolean on a bool tag; a Double
    assert a.quality[17] == Quality.UNCERTAIN  # a Boolean on a bool tag: its status decides
    # subscribed: the same values notified one by one, in any order, then the cycle's copy
    cache = codec.SubCache(link.read_specs)
    for pos in random.Random(1).sample(range(n), n):
        assert cache.missing == n - sum(cache.seen)
        cache.store(pos, dvs[pos])
    assert cache.missing == 0
    cache.fill(c, link.read_index, 3.0)
    same(a, c)
    # unusual values (a string, no variant value) take the per-tag path: same answer
    dvs[5] = ua.DataValue(ua.Variant("1.5", ua.VariantType.String))
    dvs[6] = ua.DataValue(ua.Variant(None))
    codec.fill(a, link.read_slots, link.read_index, link.scale, link.offset, dvs, 4.0, link.booleans)
    codec.fill_each(b, link.read_slots, link.scale, link.offset, dvs, 4.0, link.booleans)
    same(a, b)
    cache.store(5, dvs[5])
    cache.store(6, dvs[6])
    cache.fill(c, link.read_index, 4.0)
    same(a, c)
    # a poll's snapshot becomes the cache's: a later fill without notifications repeats it
    cache.load(b, link.read_index)
    codec.fill(b, link.read_slots, link.read_index, link.scale, link.offset, dvs[::-1], 5.0, link.booleans)  # the snapshot moves on; the cache does not
    cache.fill(b, link.read_index, 4.0)
    same(a, b)


@pytest.mark.parametrize("layout", ["int16", "mixed", "overlap", "little", "orders"])
def test_modbus_block_decoder_matches_the_reference(layout: str) -> None:
    specs: dict[str, TagSpec] = {}
    if layout == "int16":
        specs = {f"m{i}": TagSpec(connection="m", table="holding", address=i, datatype="int16", scale=0.1)
                 for i in range(300)}
    elif layout == "mixed":
        widths = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "bool": 1, "double": 4}
        addr = 0
        for i in range(64):
            dt = list(widths)[i % 7]
            addr += i % 3 == 0  # some gaps (merged into one block only where they touch)
            specs[f"x{i}"] = TagSpec(connection="m", table="input", address=addr, datatype=dt,  # type: ignore[arg-type]
                                     scale=0.5, offset=1.0)
            addr += widths[dt]
    elif layout == "overlap":
        specs = {f"a{i}": TagSpec(connection="m", table="holding", address=i, datatype="int16") for i in range(4)}
        specs["b"] = TagSpec(connection="m", table="holding", address=1, datatype="int32")
    elif layout == "little":
        specs = {f"w{i}": TagSpec(connection="m", table="input", address=2 * i, datatype="float32",
                                  word_order="little") for i in range(8)}
    else:  # every type in every word and byte order, with gaps
        specs, addr = {}, 0
        for i in range(48):
            dt = ["int16", "uint16", "int32", "uint32", "float32", "double", "bool"][i % 7]
            addr += i % 5 == 0
            specs[f"o{i}"] = TagSpec(connection="m", table="holding", address=addr, datatype=dt,  # type: ignore[arg-type]
                                     word_order=["big", "little"][i % 2], byte_order=["big", "little"][(i // 2) % 2],  # type: ignore[arg-type]
                                     scale=0.5)
            addr += {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "double": 4, "bool": 1}[dt]
    transport = ModbusTransport(tagmap(specs), {"m": ModbusConnection(type="modbus", host="h")})
    rng = random.Random(layout)
    a, b = Snapshot(len(specs)), Snapshot(len(specs))
    for block in transport.blocks("m"):
        response = ReadHoldingRegistersResponse if block.table == "holding" else ReadInputRegistersResponse
        rr = response(registers=[rng.randrange(65536) for _ in range(block.count)])
        assert (block.whole is None) == (layout == "overlap")  # every other layout: one struct
        ModbusTransport._fill(a, block, rr, 1.0, 2.0)
        ModbusTransport._fill(b, dataclasses.replace(block, whole=None), rr, 1.0, 2.0)  # per tag: codec.decode
    same(a, b)


def test_pre_encoded_read_request_is_what_asyncua_would_send() -> None:
    from asyncua.ua.ua_binary import struct_to_binary

    ids = [ua.NodeId.from_string(s) for s in ("ns=2;s=a.b", "i=2258", "ns=3;i=7", "ns=2;g=09087e75-8e5e-499b-954f-f2a9603db28a")]
    request = ReadRequest(ids, fast=True)

    class Proto:  # asyncua's header bookkeeping, as UASocketProtocol does it
        authentication_token = ua.NodeId(5, 1)
        _request_handle = 41

        def _setup_request_header(self, hdr: ua.RequestHeader, timeout: float) -> None:
            hdr.AuthenticationToken = self.authentication_token
            self._request_handle += 1
            hdr.RequestHandle = self._request_handle
            hdr.TimeoutHint = int(timeout * 1000)

    for _ in range(2):  # the header is reused: each encoding carries the new handle
        encoded = request.encode(2.0, Proto())  # type: ignore[arg-type]
        reference = ua.ReadRequest()
        reference.RequestHeader = request.header
        reference.Parameters.NodesToRead = [ua.ReadValueId(NodeId=n, AttributeId=ua.AttributeIds.Value) for n in ids]
        assert encoded == struct_to_binary(reference)


@pytest.mark.parametrize("datatype", ["int16", "uint16"])
@pytest.mark.parametrize("valid", [None, (-1e6, 1e6)])
def test_modbus_16_bit_encoding_matches_the_reference(datatype: str, valid: tuple[float, float] | None) -> None:
    spec = TagSpec(connection="m", table="holding", address=0, datatype=datatype, range=valid)  # type: ignore[arg-type]
    rng = random.Random(datatype)
    for raw in [*(rng.uniform(-70000, 140000) for _ in range(3000)), -32768.5, 32767.4, 65535.5, -0.5]:
        answers = []
        for fn in (encode, encode_reference):
            try:
                answers.append(fn(spec, raw))
            except TransportError:
                answers.append("refused")  # a ranged tag refuses what does not fit; others wrap
        assert answers[0] == answers[1], raw


@given(st.lists(st.tuples(st.sampled_from(["int16", "uint16", "int32", "uint32", "float32", "double", "bool"]),
                          st.sampled_from(["big", "little"]), st.booleans(),
                          st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)), min_size=1, max_size=5))
def test_modbus_write_registers_match_encode(tags: list[tuple[str, str, bool, float]]) -> None:
    """The write path's pre-read encoding gives encode()'s registers, or its refusal, for every type."""
    specs, addr = {}, 0
    for i, (dt, order, ranged, _) in enumerate(tags):
        specs[f"o{i}"] = TagSpec(connection="m", table="holding", address=addr, datatype=dt, byte_order=order,  # type: ignore[arg-type]
                                 scale=0.1, offset=1.0, writable=True, range=(-1e6, 1e6) if ranged else None)
        addr += {"int16": 1, "uint16": 1, "bool": 1, "int32": 2, "uint32": 2, "float32": 2, "double": 4}[dt]
    transport = ModbusTransport(tagmap(specs), {"m": ModbusConnection(type="modbus", host="h")})
    plan = plan_writes(specs, list(specs))
    values = [v for *_, v in tags]
    (part,) = transport._plan(plan)
    ops = part.prepared
    expected: list[int] = []
    try:
        for spec, v in zip(specs.values(), values, strict=True):
            expected += encode(spec, (v - spec.offset) / spec.scale)
    except (struct.error, TransportError):
        with pytest.raises(TransportError, match="refused write of"):
            [op.payload(plan, values) for op in ops]
        return
    assert [r for op in ops for r in op.payload(plan, values)] == expected


def test_the_read_fast_path_runs_only_on_the_asyncua_versions_it_was_checked_against() -> None:
    assert fast_path_supported("2.1.0") and fast_path_supported("2.1.7")
    assert not fast_path_supported("2.2.0") and not fast_path_supported("3.0")
    assert ReadRequest([ua.NodeId(1, 2)], fast=False).fast is False


def test_modbus_reference_codec_round_trips_every_type_and_order() -> None:
    """The reference (pymodbus' converters plus the byte order) against struct, by hand."""
    from edgewarden.gateway.io.modbus.codec import decode

    for dt, fmt in (("int16", ">h"), ("uint16", ">H"), ("int32", ">i"), ("uint32", ">I"), ("float32", ">f"),
                    ("double", ">d")):
        for word in ("big", "little"):
            for byte in ("big", "little"):
                spec = TagSpec(connection="m", table="holding", address=0, datatype=dt,  # type: ignore[arg-type]
                               word_order=word, byte_order=byte)  # type: ignore[arg-type]
                value = 1234.5 if fmt in (">f", ">d") else 1234
                data = struct.pack(fmt, value)
                words = [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]
                if byte == "little":
                    words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
                if word == "little":
                    words.reverse()
                assert encode_reference(spec, value) == words, (dt, word, byte)
                assert decode(spec, words) == value, (dt, word, byte)
