"""Canonical JSON payloads: the fast encoder (orjson) against the documented definition.

docs/audit-format.md defines a payload as the standard library's
``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)``
after non-finite floats became strings. The two encoders may spell a float differently
(``1e-07`` / ``1e-7``: both the shortest round-trip string), so the properties are: the
same value decoded, and the same bytes wherever no float is involved.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgewarden.gateway.audit import record as fmt

NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def reference(obj: object) -> bytes:
    return json.dumps(fmt._replace_nonfinite(obj), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False).encode("utf-8")


def as_recorded(obj: object) -> object:
    """What a payload reads back as: non-finite floats become their strings."""
    return json.loads(json.dumps(fmt._replace_nonfinite(obj)))


scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
                    st.floats(allow_nan=True, allow_infinity=True), st.text())
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)), max_leaves=30)
payloads = st.dictionaries(st.text(max_size=8), values, max_size=8)
no_floats = st.dictionaries(st.text(max_size=8), st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.text()),
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)),
    max_leaves=30), max_size=8)


@given(payloads)
def test_decodes_to_the_documented_value(payload: dict) -> None:
    encoded = fmt.encode_payload(payload)
    assert json.loads(encoded) == as_recorded(payload)


@given(no_floats)
def test_same_bytes_as_the_definition_without_floats(payload: dict) -> None:
    assert fmt.encode_payload(payload) == reference(payload)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_floats_are_shortest_round_trip(x: float) -> None:
    text = fmt.encode_payload({"x": x})[5:-1]
    assert float(text) == x or (x == 0 and float(text) == 0)
    assert significant(text.decode()) == significant(repr(x))  # 1e-7 / 1e-07, 0.00001 / 1e-05


def significant(text: str) -> str:
    """The significant digits of a float's spelling: '0.00001' and '1e-05' both give '1'."""
    return text.split("e")[0].replace("-", "").replace(".", "").strip("0") or "0"


@given(st.lists(st.floats(), max_size=20), st.lists(st.floats(), max_size=5))
def test_non_finite_floats_are_kept_as_strings(xs: list[float], ys: list[float]) -> None:
    payload = {"obs": {f"T{i}": x for i, x in enumerate(xs)}, "written": ys, "none": None,
               "arr": np.array(ys, dtype=np.float64)}
    decoded = json.loads(fmt.encode_payload(payload))
    for i, x in enumerate(xs):
        got = decoded["obs"][f"T{i}"]
        assert (NONFINITE[got] if isinstance(got, str) else got) == x or (math.isnan(x) and got == "NaN")
    assert decoded["none"] is None and len(decoded["arr"]) == len(ys)


def test_what_orjson_refuses_goes_through_the_standard_library() -> None:
    assert fmt.encode_payload({"big": 10**30, "k": {1: 2.0}}) == b'{"big":1000000000000000000000000000000,"k":{"1":2.0}}'
    assert fmt.encode_payload({"s": {3, 1}, "f32": np.float32(0.5), "i": np.int64(7)}) == b'{"f32":0.5,"i":7,"s":[1,3]}'


@pytest.mark.parametrize("bad", [b"\x00", object(), "\udcff"])
def test_unencodable_values_raise(bad: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        fmt.encode_payload({"v": bad})


def test_the_nonfinite_screen_misses_nothing() -> None:
    assert fmt._may_hold_nonfinite({"a": [1.0, "x", {"b": (2.0, math.inf)}]})
    assert fmt._may_hold_nonfinite({"a": np.array([[1.0, math.nan]])})
    assert fmt._may_hold_nonfinite({"a": {1.0, -math.inf}})
    assert not fmt._may_hold_nonfinite({"a": [1.0, None, "NaN"], "b": 10**400, "c": np.arange(3)})
