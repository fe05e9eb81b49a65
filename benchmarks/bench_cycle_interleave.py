"""The read and write stages' calls, the gateway's transport and the bare library
alternating in one process against one load twin: what is left of a gateway/bare ratio
here is code, not the process, the run or the scan phase.

    .venv/bin/python benchmarks/bench_cycle_interleave.py --cells modbus:64x1:10 --interleave 100
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import free_port, machine
from _cycle import N_OUT, Cell, TwinProcess, add_cell_options, bare_io, cells_of, gateway_config, process_settings


async def interleave(cell: Cell, args: argparse.Namespace) -> list[str]:
    """The read and write stages' calls, gateway transport and bare library alternating in
    this one process against one twin, each pair ``--interleave`` ms after the last (100 ms
    is what a 10 Hz cycle sleeps: caches cold), at a random phase of the twin's scan. What
    is left of a gateway/bare ratio here is code, not the process, the run or the phase."""
    import random

    from edgewarden.gateway.config import load_config
    from edgewarden.gateway.io.composite import CompositeTransport
    from edgewarden.gateway.io.tags import Snapshot, TagMap
    from edgewarden.gateway.io.transport import plan_writes
    from edgewarden.simulators.scale import SCAN_S

    pause = args.interleave / 1000.0
    async with TwinProcess(cell, args.twin_cpu, args.twin_realtime, args.twin_freeze_gc) as twin:
        with tempfile.TemporaryDirectory(prefix="edgewarden-interleave-") as d_:
            args.metrics_port = free_port()  # not served: the config only has to be valid
            settings = load_config(gateway_config(Path(d_), cell, twin.address, args)).settings
            tags = TagMap.from_settings(settings)
            transport = CompositeTransport(tags, settings.connections)
            await transport.connect()
        snap = Snapshot(len(tags.readable))
        plan = plan_writes(tags.specs, [*(f"a{j}" for j in range(N_OUT)), "hb"])
        values = [50.0] * N_OUT + [0.0]
        outputs = [50.0] * N_OUT
        bare_read, bare_write, bare_close = await bare_io(cell, twin.address, 1000.0 / cell.hz)

        async def gw_write(k: int) -> None:
            values[-1] = float(k % 1000)  # the heartbeat moves, as the bare client's does
            await transport.write(plan, values)

        calls = {"gw": (lambda: transport.read(snap), gw_write),
                 "bare": (bare_read, lambda k: bare_write(outputs, k))}
        n = args.interleave_pairs
        times = {k: np.empty(n) for k in ("gw read", "bare read", "gw write", "bare write")}
        phase = np.empty(n)  # of the bare client's calls
        clock = time.perf_counter
        try:
            for k in range(-20, n):  # 20 pairs of warm-up
                for side in (("gw", "bare") if k % 2 else ("bare", "gw")):
                    read, write = calls[side]
                    await asyncio.sleep(pause * random.uniform(0.9, 1.1))
                    t0 = clock()
                    await read()
                    t1 = clock()
                    await write(k)
                    t2 = clock()
                    if k >= 0:
                        times[f"{side} read"][k], times[f"{side} write"][k] = t1 - t0, t2 - t1
                        if side == "bare":
                            phase[k] = (t0 % SCAN_S) / SCAN_S  # the twin scans on the same clock's grid
        finally:
            await transport.close()
            await bare_close()
    med = {k: float(np.median(v)) * 1e6 for k, v in times.items()}
    lines = [f"{cell.name}: {n} pairs, {args.interleave:g} ms apart (± 10 %), medians µs: "
             f"read gw {med['gw read']:.0f} / bare {med['bare read']:.0f} = {med['gw read'] / med['bare read']:.2f}x, "
             f"write gw {med['gw write']:.0f} / bare {med['bare write']:.0f} = "
             f"{med['gw write'] / med['bare write']:.2f}x"]
    lines.append("  by phase of the twin's scan (approximate: its grid is re-based after a late scan), "
                 "bare read / write median µs:")
    for b in range(5):
        m = (phase >= b / 5) & (phase < (b + 1) / 5)
        if m.any():
            lines.append(f"    {b / 5:.1f}-{(b + 1) / 5:.1f}: n {int(m.sum()):4d}  read {np.median(times['bare read'][m]) * 1e6:6.0f}"
                         f"  write {np.median(times['bare write'][m]) * 1e6:6.0f}")
    return lines


def main() -> int:
    from edgewarden.gateway import timing

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cell_options(ap)
    ap.add_argument("--interleave", type=float, default=100.0, metavar="MS", help="pause before each call "
                    "(100 ms is what a 10 Hz cycle sleeps: caches cold)")
    ap.add_argument("--interleave-pairs", type=int, default=400)
    args = ap.parse_args()
    print(f"# bench_cycle_interleave  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}  {machine()}")
    print(f"# event_loop={args.event_loop}, realtime={args.realtime or 'no'} on CPU {args.daemon_cpu}, "
          f"twin CPU {args.twin_cpu} (FIFO {args.twin_realtime or 'no'})")
    gw = process_settings(args)
    timing.prepare_process(gw)
    for cell in cells_of(args):
        print("\n".join(timing.run(interleave(cell, args), gw)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
