"""Modbus read: the cycle's snapshot fill (``ModbusTransport._fill``) per block layout, as
the daemon runs it: int16 big-endian, float32 with little word order, double with little
byte order. Runs on this revision and, through benchmarks/compare_revisions.sh, on older
ones (the transport moved from edgewarden/gateway/io/modbus.py to edgewarden/gateway/io/modbus/transport.py).

    .venv/bin/python benchmarks/bench_modbus_fill.py [--repeat 300]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse

from _common import machine

from edgewarden.gateway.config import ModbusConnection, TagSpec
from edgewarden.gateway.io.tags import Snapshot, TagMap

try:
    from edgewarden.gateway.io.modbus.transport import ModbusTransport
except ImportError:  # revisions before the protocol packages
    from edgewarden.gateway.io.modbus import ModbusTransport  # type: ignore[no-redef]

LAYOUTS = {"int16, big": ("int16", 1, "big", "big"), "float32, little word order": ("float32", 2, "little", "big"),
           "double, little byte order": ("double", 4, "big", "little")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=300)
    args = ap.parse_args()
    print(f"# bench_modbus_fill  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}  {machine()}")
    print(f"{'layout':<28} {'tags':>5} {'fill median µs':>15}")
    for label, (datatype, width, words, byte_order) in LAYOUTS.items():
        for n in (8, 64, 512):
            specs = {f"m{i}": TagSpec(connection="m", table="holding", address=width * i, datatype=datatype,  # type: ignore[arg-type]
                                      word_order=words, byte_order=byte_order, scale=0.1)  # type: ignore[arg-type]
                     for i in range(n)}
            tags = TagMap(specs=specs, readable=tuple(specs), index={k: i for i, k in enumerate(specs)})
            transport = ModbusTransport(tags, {"m": ModbusConnection(type="modbus", host="h")})
            rng = random.Random(n)
            blocks = [(b, ReadHoldingRegistersResponse(registers=[rng.randrange(65536) for _ in range(b.count)]))
                      for b in transport.blocks("m")]
            snap = Snapshot(n)
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                for block, response in blocks:
                    ModbusTransport._fill(snap, block, response, 1.0, 2.0)
                times.append(time.perf_counter() - t0)
            print(f"{label:<28} {n:5d} {statistics.median(times) * 1e6:15.1f}")


if __name__ == "__main__":
    main()
