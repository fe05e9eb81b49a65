"""Each fast path of the cycle's I/O beside its reference (both in the code), in this one
process, interleaved: the OPC UA batch fill and subscription cache against the reference
decoder, the pre-encoded Read against asyncua's encoding, the Modbus block decoder and
16-bit encoder against the pymodbus-based reference codec. No twin, no daemon.

    .venv/bin/python benchmarks/bench_cycle_paths.py [--repeat 200]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Any

import numpy as np
from _common import machine
from _cycle import FULL_TAGS


def micro(repeat: int) -> list[str]:
    """Each fast path beside its reference (both in the code), same process, interleaved."""
    import random
    from datetime import UTC, datetime
    from pymodbus.pdu.register_message import ReadHoldingRegistersResponse

    from asyncua import ua
    from asyncua.ua.ua_binary import struct_to_binary

    from edgewarden.gateway.config import ModbusConnection, OpcUaConnection, TagSpec
    from edgewarden.gateway.io.modbus.codec import encode, encode_reference
    from edgewarden.gateway.io.modbus.transport import ModbusTransport
    from edgewarden.gateway.io.opcua import codec
    from edgewarden.gateway.io.opcua.request import ReadRequest
    from edgewarden.gateway.io.opcua.transport import OpcUaTransport
    from edgewarden.gateway.io.tags import Snapshot, TagMap

    def tagmap(specs: dict[str, TagSpec]) -> TagMap:
        return TagMap(specs=specs, readable=tuple(specs), index={k: i for i, k in enumerate(specs)})

    def ab(before: Any, after: Any, n: int) -> tuple[float, float]:
        a, b = np.empty(n), np.empty(n)
        clock = time.perf_counter
        for k in range(n):
            t0 = clock()
            before()
            t1 = clock()
            after()
            a[k], b[k] = t1 - t0, clock() - t1
        return float(np.median(a) * 1e6), float(np.median(b) * 1e6)

    class Proto:  # asyncua's request-header bookkeeping
        authentication_token = ua.NodeId(5, 1)
        _request_handle = 0

        def _setup_request_header(self, hdr: ua.RequestHeader, timeout: float) -> None:
            hdr.AuthenticationToken = self.authentication_token
            self._request_handle += 1
            hdr.RequestHandle = self._request_handle
            hdr.TimeoutHint = int(timeout * 1000)

    lines = [f"{'path (µs per cycle, median)':<44} {'tags':>5} {'before':>8} {'after':>8} {'x':>6}"]
    now = datetime.now(UTC)
    proto = Proto()
    for n in FULL_TAGS:
        k = max(20, repeat * 64 // n)
        specs = {f"m{i}": TagSpec(connection="u", node=f"ns=2;s=scale.m{i}") for i in range(n)}
        link = OpcUaTransport(tagmap(specs), {"u": OpcUaConnection(url="opc.tcp://x:1")})._links["u"]
        dvs = [ua.DataValue(ua.Variant(float(i), ua.VariantType.Double), SourceTimestamp=now, ServerTimestamp=now)
               for i in range(n)]
        snap = Snapshot(n)
        def ua_fill(fn: Any, values: list[Any]) -> None:
            if fn is codec.fill_each:
                fn(snap, link.read_slots, link.scale, link.offset, values, 1.0)  # noqa: B023
            else:
                fn(snap, link.read_slots, link.read_index, link.scale, link.offset, values, 1.0)  # noqa: B023

        rows = [("OPC UA snapshot fill: per tag -> arrays", ab(
            lambda: ua_fill(codec.fill_each, dvs),  # noqa: B023
            lambda: ua_fill(codec.fill, dvs), k))]  # noqa: B023
        # subscribed, every tag notified each period (the load twin's case): the DataValue
        # cached and converted at the cycle (before) / converted on arrival, copied (after)
        cache: list[Any] = [None] * n
        sub = codec.SubCache(link.read_specs)

        def notified_before() -> None:
            for pos, dv in enumerate(dvs):  # noqa: B023
                cache[pos] = dv  # noqa: B023

        def notified_after() -> None:
            for pos, dv in enumerate(dvs):  # noqa: B023
                sub.store(pos, dv)  # noqa: B023

        notified_before()
        notified_after()
        rows.append(("OPC UA subscribed, the cycle's read", ab(
            lambda: ua_fill(codec.fill, cache),  # noqa: B023
            lambda: sub.fill(snap, link.read_index, 1.0), k)))  # noqa: B023
        rows.append(("OPC UA subscribed, notifications + read", ab(
            lambda: (notified_before(), ua_fill(codec.fill, cache)),  # noqa: B023
            lambda: (notified_after(), sub.fill(snap, link.read_index, 1.0)), k)))  # noqa: B023
        ids = [ua.NodeId.from_string(f"ns=2;s=scale.m{i}") for i in range(n)]
        request = ReadRequest(ids, fast=True)

        def build_and_encode() -> bytes:
            req = ua.ReadRequest()
            for nid in ids:  # noqa: B023 (what read_attributes does per call)
                rv = ua.ReadValueId()
                rv.NodeId = nid
                rv.AttributeId = ua.AttributeIds.Value
                req.Parameters.NodesToRead.append(rv)
            proto._setup_request_header(req.RequestHeader, 2.0)
            return struct_to_binary(req)

        rows.append(("OPC UA Read request: asyncua -> pre-encoded", ab(
            build_and_encode, lambda: request.encode(2.0, proto), k)))  # type: ignore[arg-type]  # noqa: B023
        msnap = Snapshot(n)

        def fill(pairs: list[Any]) -> None:
            for block, rr in pairs:
                ModbusTransport._fill(msnap, block, rr, 1.0, 2.0)  # noqa: B023

        for label, datatype, word_order in (("int16", "int16", "big"), ("float32, little word order", "float32", "little")):
            size = 2 if datatype == "float32" else 1
            mspecs = {f"m{i}": TagSpec(connection="m", table="holding", address=size * i, datatype=datatype,  # type: ignore[arg-type]
                                       word_order=word_order, scale=0.1) for i in range(n)}  # type: ignore[arg-type]
            mt = ModbusTransport(tagmap(mspecs), {"m": ModbusConnection(type="modbus", host="h")})  # type: ignore[call-overload]
            rng = random.Random(n)
            blocks = [(b, ReadHoldingRegistersResponse(registers=[rng.randrange(65536) for _ in range(b.count)]))
                      for b in mt.blocks("m")]
            reference = [(dataclasses.replace(b, whole=None), rr) for b, rr in blocks]  # per tag: codec.decode
            rows.append((f"Modbus fill {label}: per tag -> one struct", ab(
                lambda: fill(reference), lambda: fill(blocks), k)))  # noqa: B023
        for name, (before, after) in rows:
            lines.append(f"{name:<44} {n:5d} {before:8.1f} {after:8.1f} {before / after:6.1f}")
    spec = TagSpec(connection="m", table="holding", address=0, datatype="int16", scale=0.1)
    before, after = ab(lambda: [encode_reference(spec, 512.0 + i) for i in range(3)],
                       lambda: [encode(spec, 512.0 + i) for i in range(3)], repeat * 10)
    lines.append(f"{'Modbus encode 3 int16 outputs: pymodbus -> int':<44} {3:5d} {before:8.1f} {after:8.1f} "
                 f"{before / after:6.1f}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=200, help="calls per path at 64 tags (scaled by size)")
    args = ap.parse_args()
    print(f"# bench_cycle_paths  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}  {machine()}")
    print("\n".join(micro(args.repeat)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
