"""How the cycle waits for its deadline, and the machine's floor, on the daemon's CPU,
event loop and priority: lateness against the tick grid and CPU for each way of waiting
(``--wait-compare``), and the lateness of pure computation per cycle (``--floor``).

    .venv/bin/python benchmarks/bench_cycle_wait.py --wait-compare 20 --wait-hz 100
    .venv/bin/python benchmarks/bench_cycle_wait.py --floor 20 --floor-us 1000
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time

import numpy as np
from _common import machine
from _cycle import add_process_options, process_settings, stats_us, steal_ms


async def wait_compare(hz: float, seconds: float, busy_us: float) -> list[str]:
    """The cycle's waits, on this process's event loop: lateness against the grid and CPU."""
    from edgewarden.gateway.pacing import sleep_until

    busy_s = busy_us / 1e6

    async def loop_only(deadline: float) -> None:
        delay = deadline - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)

    async def spin(deadline: float) -> None:  # the busy-wait before this change: spin busy_s
        delay = deadline - time.perf_counter() - busy_s
        if delay > 0:
            await asyncio.sleep(delay)
        while time.perf_counter() < deadline:
            pass

    async def now_(deadline: float) -> None:
        await sleep_until(deadline, busy_s)

    lines = [f"{'wait before each deadline':<40} {'late med':>8} {'p99':>7} {'p99.9':>7} {'max':>7} {'CPU':>6}"]
    for name, wait in (("event loop timer only", loop_only), (f"event loop + spin {busy_us:g} µs (before)", spin),
                       ("event loop + nanosleep + spin (now)", now_)):
        period, n = 1.0 / hz, int(seconds * hz)
        late = np.empty(n)
        cpu0 = time.process_time()
        deadline = time.perf_counter() + period
        for k in range(n):
            await wait(deadline)
            late[k] = time.perf_counter() - deadline
            deadline += period
        cpu = (time.process_time() - cpu0) / (n * period)
        st = stats_us(late)
        lines.append(f"{name:<40} {st['median']:8.0f} {st['p99']:7.0f} {st['p999']:7.0f} {st['max']:7.0f} "
                     f"{cpu * 100:5.1f}%")
    return lines


async def floor(hz: float, seconds: float, busy_us: float, work_us: float) -> list[str]:
    """The physical floor of this machine for a cycle: a fixed piece of pure computation
    (``work_us`` long when undisturbed) run on the cycle's deadlines, on the cycle's CPU and
    priority, with no I/O, no other thread and nothing of ours in it. Any time it takes
    beyond its undisturbed length is the machine's (hypervisor steal, a slower core, the
    kernel), and a cycle whose work takes that long would miss its deadline too."""
    from edgewarden.gateway.pacing import sleep_until

    def work(k: int) -> None:
        x = 0
        for i in range(k):
            x += i

    k = 1000
    while True:  # calibrate: the median of 50 runs ≈ work_us
        times = []
        for _ in range(50):
            t0 = time.perf_counter()
            work(k)
            times.append(time.perf_counter() - t0)
        med = float(np.median(times))
        if abs(med * 1e6 - work_us) < 0.03 * work_us:
            break
        k = max(1, int(k * work_us / (med * 1e6)))
    period, n = 1.0 / hz, int(seconds * hz)
    took, late = np.empty(n), np.empty(n)
    steal0 = steal_ms()
    deadline = time.perf_counter() + period
    for j in range(n):
        await sleep_until(deadline, busy_us / 1e6)
        t0 = time.perf_counter()
        late[j] = t0 - deadline
        work(k)
        took[j] = time.perf_counter() - t0
        deadline += period
        if time.perf_counter() > deadline:
            deadline += math.ceil((time.perf_counter() - deadline) / period) * period
    steal = [round(b - a) for a, b in zip(steal0, steal_ms())]
    w, lt = stats_us(took), stats_us(late)
    over = int((took > period).sum())
    return [f"# floor: {n} cycles at {hz:g} Hz, {work_us:g} µs of pure computation each (calibrated: "
            f"{k} loop iterations), steal during the run {steal} ms per CPU",
            f"work  median {w['median']:.0f}  p99 {w['p99']:.0f}  p99.9 {w['p999']:.0f}  max {w['max']:.0f} µs; "
            f"{over} cycles took longer than the period ({period * 1e6:.0f} µs); "
            f"{int((took > 1.5 * work_us / 1e6).sum())} took more than 1.5x their undisturbed time",
            f"lateness  median {lt['median']:.0f}  p99 {lt['p99']:.0f}  p99.9 {lt['p999']:.0f}  max {lt['max']:.0f} µs"]


def main() -> int:
    from edgewarden.gateway import timing

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_process_options(ap)
    ap.add_argument("--wait-compare", type=float, default=0.0, metavar="SECONDS",
                    help="only compare the ways of waiting for a deadline at --wait-hz for SECONDS each")
    ap.add_argument("--wait-hz", type=float, default=100.0)
    ap.add_argument("--floor", type=float, default=0.0, metavar="SECONDS", help="only the machine's floor: "
                    "--floor-us of pure computation per cycle at --wait-hz on the daemon's CPU and priority")
    ap.add_argument("--floor-us", type=float, default=1000.0)
    args = ap.parse_args()
    if not (args.wait_compare or args.floor):
        ap.error("give --wait-compare SECONDS and/or --floor SECONDS")
    print(f"# bench_cycle_wait  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}  {machine()}")
    gw = process_settings(args)
    timing.prepare_process(gw)
    if args.wait_compare:
        print(f"# {args.wait_hz:g} Hz, {args.wait_compare:g} s each, event_loop={args.event_loop}, "
              f"realtime={args.realtime or 'no'}, CPU {args.daemon_cpu}")
        print("\n".join(timing.run(wait_compare(args.wait_hz, args.wait_compare, args.busy_wait_us), gw)))
    if args.floor:
        print("\n".join(timing.run(floor(args.wait_hz, args.floor, args.busy_wait_us, args.floor_us), gw)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
