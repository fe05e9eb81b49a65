"""Decoders check a reply's shape before using it: any reply either decodes, or is a
ProtocolError naming what was wrong; never another exception (property tests, seeded)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from asyncua import ua
from hypothesis import given, seed, settings
from hypothesis import strategies as st
from pymodbus.pdu.bit_message import ReadCoilsResponse, ReadDiscreteInputsResponse
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersResponse,
    ReadInputRegistersResponse,
    WriteMultipleRegistersResponse,
)

from edgewarden.gateway.config import TagSpec
from edgewarden.gateway.errors import ProtocolError
from edgewarden.gateway.io.modbus.codec import WRITE_FUNCTION, check_reply, plan_blocks
from edgewarden.gateway.io.opcua import codec
from edgewarden.gateway.io.tags import Snapshot

RESPONSES = {1: ReadCoilsResponse, 2: ReadDiscreteInputsResponse, 3: ReadHoldingRegistersResponse,
             4: ReadInputRegistersResponse, 16: WriteMultipleRegistersResponse}


def _block(table: str, n: int):  # one block of n int16 registers (or bits) at address 10
    dt = "bool" if table in ("coil", "discrete") else "int16"
    specs = {f"t{i}": TagSpec(connection="m", table=table, address=10 + i, datatype=dt) for i in range(n)}  # type: ignore[arg-type]
    (block,) = plan_blocks(specs, list(specs), list(range(n)), 120)
    return block


@seed(27)
@settings(max_examples=300, deadline=None)
@given(table=st.sampled_from(["holding", "input", "coil", "discrete"]), n=st.integers(1, 20),
       fc=st.sampled_from(sorted(RESPONSES)), got=st.integers(0, 40))
def test_a_modbus_read_reply_of_any_shape_decodes_or_is_a_protocol_fault(table: str, n: int, fc: int, got: int) -> None:
    block = _block(table, n)
    cls = RESPONSES[fc]
    rr = cls(bits=[True] * got) if fc in (1, 2) else cls(registers=[7] * got)
    try:
        raw = block.raw(rr)
    except ProtocolError as exc:
        assert str(exc).startswith(f"protocol fault: unit 1 {table} 10+{n}: answered ")
        return
    assert fc == {"coil": 1, "discrete": 2, "holding": 3, "input": 4}[table]
    assert len(raw) == n and np.isfinite(raw).all()


def test_a_modbus_reply_names_function_code_and_count() -> None:
    with pytest.raises(ProtocolError, match="answered function code 4, asked 3"):
        _block("holding", 4).raw(ReadInputRegistersResponse(registers=[1, 2, 3, 4]))
    with pytest.raises(ProtocolError, match="answered 3 registers, asked 4"):
        _block("holding", 4).raw(ReadHoldingRegistersResponse(registers=[1, 2, 3]))
    assert list(_block("coil", 3).raw(ReadCoilsResponse(bits=[True, False, True] + [False] * 5))) == [1.0, 0.0, 1.0]
    with pytest.raises(ProtocolError, match="answered function code 3, asked 16"):
        check_reply(ReadHoldingRegistersResponse(registers=[1]), WRITE_FUNCTION["holding"], 0, False, "write")


@seed(27)
@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 12), got=st.integers(0, 16),
       values=st.lists(st.one_of(st.tuples(st.floats(), st.just(ua.VariantType.Double)),
                                 st.tuples(st.integers(-2**31, 2**31 - 1), st.just(ua.VariantType.Int32)),
                                 st.tuples(st.booleans(), st.just(ua.VariantType.Boolean)),
                                 st.tuples(st.none(), st.just(ua.VariantType.Null)),
                                 st.tuples(st.text(max_size=3), st.just(ua.VariantType.String)),
                                 st.tuples(st.lists(st.floats(), min_size=1, max_size=2), st.just(ua.VariantType.Double))),
                       min_size=16, max_size=16),
       codes=st.lists(st.sampled_from([0, ua.StatusCodes.BadNodeIdUnknown, ua.StatusCodes.UncertainInitialValue,
                                       0xFFFFFFFF]), min_size=16, max_size=16))
def test_an_opcua_read_reply_of_any_shape_fills_or_is_a_protocol_fault(n: int, got: int, values: list,
                                                                        codes: list[int]) -> None:
    dvs = [ua.DataValue(ua.Variant(v, t), StatusCode=ua.StatusCode(c)) for (v, t), c in zip(values[:got], codes, strict=False)]
    snap = Snapshot(n)
    slots = np.arange(n)
    try:
        codec.fill(snap, slots, slice(0, n), np.ones(n), np.zeros(n), dvs, 1.0)
    except ProtocolError as exc:
        assert got != n and str(exc) == f"protocol fault: Read answered {got} results for {n} nodes"
        return
    assert got == n
    for k in range(n):  # the fast path decided as the reference decoder does
        raw, quality, _ = codec.decode(dvs[k])
        assert snap.quality[k] == quality
        assert (math.isnan(raw) and math.isnan(snap.values[k])) or snap.values[k] == raw
