"""OPC UA values to and from engineering units: one decoder, with its fast paths beside it.

:func:`decode` is the reference: one DataValue to (raw number or NaN, quality, source
timestamp or NaN). A status that is not Good decides the quality (Uncertain or Bad); a
Good status on a value that is not a plain number is BAD, and so is a value of the other
kind than its tag's: a Boolean for a numeric tag, a number for a ``bool`` tag (integer and
floating-point variants are both numbers). Two fast paths decide the same
way and are tested equal to it (tests/unit/io/test_io_fill.py): :func:`fill` for a
polled batch (a few list comprehensions and array operations instead of a per-tag loop)
and :meth:`SubCache.store` for one notified value. Anything unusual — a missing variant
or status, a value that is not a plain bool/int/float — takes :func:`decode`.
"""

from __future__ import annotations

import array
import math
from collections.abc import Sequence

import numpy as np
from asyncua import ua

from edgewarden.gateway.config import DataType, TagSpec
from edgewarden.gateway.errors import ProtocolError
from edgewarden.gateway.io.tags import Quality, Snapshot

VARIANT: dict[DataType, ua.VariantType] = {
    "double": ua.VariantType.Double,
    "float": ua.VariantType.Float,
    "float32": ua.VariantType.Float,
    "bool": ua.VariantType.Boolean,
    "int16": ua.VariantType.Int16,
    "uint16": ua.VariantType.UInt16,
    "int32": ua.VariantType.Int32,
    "uint32": ua.VariantType.UInt32,
}
_INT_BITS = {"int16": 16, "uint16": 16, "int32": 32, "uint32": 32}
_PLAIN = frozenset((float, int, bool))
_BAD = int(Quality.BAD)


def encode(spec: TagSpec, value: float) -> ua.DataValue:
    """An engineering value as the DataValue written to the tag's node, in its declared
    variant type (asyncua would otherwise guess Int64 for a Python int)."""
    raw = (value - spec.offset) / spec.scale
    wire: object
    if spec.datatype == "bool":
        wire = bool(raw)
    elif spec.datatype in ("double", "float"):
        wire = float(raw)
    else:
        wire = int(round(raw))
        bits = _INT_BITS.get(spec.datatype)
        if bits is not None and spec.range is None:
            wire %= 1 << bits  # a counter without a range wraps (the heartbeat)
            if not spec.datatype.startswith("u") and wire >= 1 << (bits - 1):
                wire -= 1 << bits
    return ua.DataValue(ua.Variant(wire, VARIANT[spec.datatype]))


def decode(dv: ua.DataValue, boolean: bool = False) -> tuple[float, Quality, float]:
    """The reference decoder: (raw number or NaN, quality, source timestamp or NaN);
    ``boolean``: the tag's datatype is bool."""
    status = dv.StatusCode
    variant = dv.Value
    value = variant.Value if variant is not None else None
    number = isinstance(value, (bool, int, float)) and (type(value) is bool) == boolean
    if status is not None and not status.is_good():
        quality = Quality.UNCERTAIN if status.is_uncertain() else Quality.BAD
    else:
        quality = Quality.GOOD if number else Quality.BAD
    ts = dv.SourceTimestamp or dv.ServerTimestamp
    return (float(value) if number else math.nan), quality, (ts.timestamp() if ts is not None else math.nan)  # type: ignore[arg-type]


def check_count(service: str, results: Sequence[object], expected: int) -> None:
    """A Read or Write answered with one result per node, or a ProtocolError."""
    if not isinstance(results, list) or len(results) != expected:
        got = len(results) if isinstance(results, list) else type(results).__name__
        raise ProtocolError(f"protocol fault: {service} answered {got} results for {expected} nodes")


def fill(snap: Snapshot, slots: np.ndarray, index: slice | np.ndarray, scale: np.ndarray, offset: np.ndarray,
         dvs: Sequence[ua.DataValue], now: float, booleans: Sequence[bool] | None = None) -> None:
    """A polled batch into the snapshot at ``index`` (``slots`` as a slice where contiguous);
    ``booleans``: which tags are ``bool`` (None: none). A reply with another count of
    results than ``slots`` is a ProtocolError; nothing is filled."""
    check_count("Read", dvs, len(slots))
    expect = [False] * len(slots) if booleans is None else booleans
    try:
        raw = [dv.Value.Value for dv in dvs]  # type: ignore[union-attr]
        codes = [dv.StatusCode.value for dv in dvs]  # type: ignore[union-attr]
    except AttributeError:
        fill_each(snap, slots, scale, offset, dvs, now, expect)
        return
    if not {type(v) for v in raw} <= _PLAIN or [type(v) is bool for v in raw] != expect:
        fill_each(snap, slots, scale, offset, dvs, now, expect)
        return
    values = np.array(raw, dtype=float)
    values *= scale
    values += offset
    snap.values[index] = values
    # the status code's two top bits: 00 Good, 01 Uncertain, 10/11 Bad
    snap.quality[index] = np.minimum(np.array(codes, dtype=np.uint32) >> 30, Quality.BAD)
    snap.source_ts[index] = [ts.timestamp() if (ts := dv.SourceTimestamp or dv.ServerTimestamp) is not None
                             else math.nan for dv in dvs]
    snap.recv_mono[index] = now


def fill_each(snap: Snapshot, slots: np.ndarray, scale: np.ndarray, offset: np.ndarray,
              dvs: Sequence[ua.DataValue], now: float, booleans: Sequence[bool] | None = None) -> None:
    """:func:`fill` through :func:`decode`, one value at a time."""
    expect = [False] * len(slots) if booleans is None else booleans
    for k, (slot, dv) in enumerate(zip(slots, dvs, strict=True)):
        raw, quality, ts = decode(dv, expect[k])
        snap.values[slot] = raw * scale[k] + offset[k]
        snap.quality[slot] = quality
        snap.source_ts[slot] = ts
        snap.recv_mono[slot] = now


class SubCache:
    """Subscription mode: each notification is decoded when it arrives (on the event loop,
    while the cycle sleeps) into arrays in the link's tag order, so the cycle's read is four
    array copies whatever changed. The arrays are numpy views of ``array``/``bytearray``
    buffers: a per-item store into those is cheaper than one into a numpy array."""

    def __init__(self, specs: list[TagSpec]) -> None:
        n = len(specs)
        self.scale = [s.scale for s in specs]
        self.offset = [s.offset for s in specs]
        self.booleans = [s.datatype == "bool" for s in specs]
        self._values = array.array("d", [math.nan]) * n
        self._quality = bytearray([Quality.NO_DATA]) * n
        self._source_ts = array.array("d", [math.nan]) * n
        self.values = np.frombuffer(self._values, dtype=np.float64)
        self.quality = np.frombuffer(self._quality, dtype=np.uint8)
        self.source_ts = np.frombuffer(self._source_ts, dtype=np.float64)
        self.seen = bytearray(n)
        self.missing = n  # tags without a notification (or a poll) yet

    def store(self, pos: int, dv: ua.DataValue) -> None:
        """One notified value; decides as :func:`decode`."""
        variant = dv.Value
        value = variant.Value if variant is not None else None
        if type(value) in _PLAIN and (type(value) is bool) == self.booleans[pos]:
            status = dv.StatusCode
            severity = status.value >> 30 if status is not None else 0  # 00 Good, 01 Uncertain, 1x Bad
            self._values[pos] = value * self.scale[pos] + self.offset[pos]
            self._quality[pos] = severity if severity < _BAD else _BAD
            ts = dv.SourceTimestamp or dv.ServerTimestamp
            self._source_ts[pos] = ts.timestamp() if ts is not None else math.nan
        else:
            raw, quality, stamp = decode(dv, self.booleans[pos])
            self._values[pos] = raw * self.scale[pos] + self.offset[pos]
            self._quality[pos] = quality
            self._source_ts[pos] = stamp
        if not self.seen[pos]:
            self.seen[pos] = 1
            self.missing -= 1

    def fill(self, snap: Snapshot, index: slice | np.ndarray, now: float) -> None:
        """Every cached tag into the snapshot, received now: the subscription is alive and
        says an unchanged value is still current."""
        snap.values[index] = self.values
        snap.quality[index] = self.quality
        snap.source_ts[index] = self.source_ts
        snap.recv_mono[index] = now

    def load(self, snap: Snapshot, index: slice | np.ndarray) -> None:
        """After a poll: the snapshot's fresh values are the cache's from now on."""
        self.values[:] = snap.values[index]
        self.quality[:] = snap.quality[index]
        self.source_ts[:] = snap.source_ts[index]
        self.seen[:] = b"\x01" * len(self.seen)
        self.missing = 0
