"""Control cycle: rate, lateness, per-stage budget and scaling of the real daemon, each
I/O stage beside the bare library doing the same requests in the same run.

Per cell (protocol, tags, devices, rate):

1. A load twin (edgewarden/simulators/scale.py: a real asyncua server with N variables, or D real
   pymodbus servers with N registers between them) starts as its own process, pinned to
   CPU 0 (``--twin-cpu``).
2. The daemon (``edgewarden run``, a subprocess as under systemd) runs a generated config
   (N measurement tags, every one hard/soft-limited, so all N are checked each cycle; a
   linear ONNX policy reads the first 8; 2 outputs + heartbeat written each cycle) with
   ``cpu_affinity`` = CPU 1 (``--daemon-cpu``), ``auto_start`` and a timing trace. After
   ``--warmup`` s in AUTO, a window of ``--seconds`` s is measured: cycles, achieved rate,
   deadline misses (the daemon's own counter), daemon and twin CPU (/proc utime+stime),
   and from the trace (every cycle, exact; edgewarden/gateway/timing.py) the lateness against the
   ideal tick grid and each stage's time: read, check, infer, shield, write, audit
   hand-off, metrics.
3. Optionally (``--estop-trips``) the PLC e-stop input is set *at the twin*, and the twin
   times the arrival of the safe outputs (trigger → safe outputs at the twin, one clock);
   reset and start go over the control socket between trips.
4. A bare client (a subprocess on the daemon's CPU, same rate, absolute deadlines) then
   does what the read and write stages do with the library alone against the same twin:
   asyncua ``read_attributes`` of the same nodes (or, subscribed, values copied out of
   a data-change cache), pymodbus reads of the same register blocks, concurrently per
   device, converted to floats; the same output write; ``session.run`` of the same ONNX
   model. Gateway/bare ratios of the medians are the gateway's overhead.

    .venv/bin/python benchmarks/bench_cycle.py                 # two short cells (a smoke run)
    .venv/bin/python benchmarks/bench_cycle.py --full          # the whole matrix, --seconds each
    .venv/bin/python benchmarks/bench_cycle.py --cells opcua-poll:64:100 --seconds 600   # one target

The other cycle benchmarks: bench_cycle_interleave.py, bench_cycle_paths.py,
bench_cycle_wait.py (benchmarks/_cycle.py holds what they share).

A cell is ``PROTOCOL:TAGS[xDEVICES]:HZ`` with PROTOCOL opcua-poll, opcua-sub or modbus.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import ROOT, free_port, machine, rss_kib, wait_for
from _cycle import (
    STAGES,
    Cell,
    TwinProcess,
    add_cell_options,
    bare,
    cells_of,
    cpu_seconds,
    gateway_config,
    pinned,
    scrape,
    stats_us,
    steal_ms,
    thread_waits_ms,
)

from edgewarden.gateway.timing import TRACE_FIELDS


async def run_daemon(cell: Cell, twin: TwinProcess, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    args.metrics_port = free_port()
    config = gateway_config(tmp, cell, twin.address, args)
    log = (tmp / "gateway.log").open("wb")
    env = {**os.environ, "EDGEWARDEN_LOGGING__FORMAT": "json"}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "edgewarden.gateway.cli", "run", "--config",
                                                str(config), stdout=log, stderr=log, env=env, cwd=str(ROOT))
    sock = tmp / "control.sock"
    assert twin.proc is not None
    out: dict[str, Any] = {}
    try:
        async def in_auto() -> dict[str, Any] | None:
            st = await scrape(args.metrics_port)
            if proc.returncode is not None:
                raise RuntimeError(f"the daemon exited ({proc.returncode}): "
                                   f"{(tmp / 'gateway.log').read_text()[-2000:]}")
            return st if st.get("mode") == "AUTO" else None

        await wait_for(in_auto, "the daemon in AUTO", timeout=120.0)
        await asyncio.sleep(args.warmup)
        st0 = await scrape(args.metrics_port)
        t0, d0, w0 = time.perf_counter(), cpu_seconds(proc.pid), cpu_seconds(twin.proc.pid)
        steal0, waits0 = steal_ms(), thread_waits_ms(proc.pid)
        twin.send({"cmd": "gc"})
        await twin.answer()  # the twin's collections from here on
        await asyncio.sleep(args.seconds)
        twin.send({"cmd": "gc"})
        out["twin_gc"] = await twin.answer()
        st1 = await scrape(args.metrics_port)
        t1, d1, w1 = time.perf_counter(), cpu_seconds(proc.pid), cpu_seconds(twin.proc.pid)
        # where the daemon's time went besides its own work: the hypervisor (steal) and the
        # scheduler (each thread's time runnable but not running)
        out["steal_ms"] = [round(b - a) for a, b in zip(steal0, steal_ms())]
        out["runnable_wait_ms"] = {k: round(v - waits0.get(k, 0.0), 1) for k, v in thread_waits_ms(proc.pid).items()}
        out.update(c0=st0["cycles"], c1=st1["cycles"], wall_s=t1 - t0, misses=st1["misses"] - st0["misses"],
                   holds=st1["holds"] - st0["holds"],
                   daemon_cpu=(d1 - d0) / (t1 - t0), twin_cpu=(w1 - w0) / (t1 - t0), rss_mib=rss_kib(proc.pid) / 1024,
                   mode=st1["mode"], reconnects=st1["reconnects"])
        if args.estop_trips:
            out["estop_us"] = await estop_trips(twin, sock, args.metrics_port, args.estop_trips, cell.hz)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 60)
        log.close()
    rows = np.load(tmp / "trace.npy")
    window = rows[out["c0"]:out["c1"]]
    col = {name: window[:, i] for i, name in enumerate(TRACE_FIELDS)}
    out["cycles"] = len(window)
    out["rate_hz"] = (out["c1"] - out["c0"]) / out["wall_s"]
    out["lateness"] = stats_us(col["lateness"])
    out["work"] = stats_us(col["work"])
    out["stages"] = {s: stats_us(col[s]) for s in STAGES}
    # garbage-collector pauses: cycles with one longer than half the period, and the longest
    out["gc_stalls"] = int((col["gc"] > 0.5 / cell.hz).sum())
    out["slow_cycles"] = int((col["work"] + col["gc"] > 1.0 / cell.hz).sum())
    return out


async def estop_trips(twin: TwinProcess, sock: Path, port: int, trips: int, hz: float) -> list[float]:
    """PLC e-stop input set at the twin → safe outputs arrive at the twin (µs, the twin's clock)."""
    import random

    from edgewarden.gateway.ops.control import send_command

    async def mode_is(mode: str) -> bool:
        return (await scrape(port)).get("mode") == mode

    async def reset() -> bool:  # refused while the cycle still reads the input set
        reply = await send_command(sock, {"cmd": "reset", "actor": "bench", "reason": "bench"})
        return reply.get("mode") in ("INHIBITED", "READY")

    rng = random.Random(0)
    samples = []
    for _ in range(trips):
        await asyncio.sleep(0.05 + rng.random() / hz)  # trigger at every phase of the cycle
        twin.send({"cmd": "estop", "on": True})
        samples.append((await twin.answer(10.0))["estop_us"])
        twin.send({"cmd": "estop", "on": False})
        await wait_for(reset, "reset accepted (e-stop input cleared)", timeout=10.0)
        await wait_for(lambda: mode_is("READY"), "READY", timeout=10.0)
        await send_command(sock, {"cmd": "start", "actor": "bench"})
        await wait_for(lambda: mode_is("AUTO"), "AUTO", timeout=10.0)
    return samples


async def run_bare(cell: Cell, twin: TwinProcess, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    spec = {"cell": cell.name, "address": twin.address, "seconds": args.bare_seconds,
            "policy": str(tmp / "policy.onnx"),
            "publish_ms": args.publish_ms if args.publish_ms is not None else 1000.0 / cell.hz}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--bare", json.dumps(spec), "--event-loop", args.event_loop,
        stdout=asyncio.subprocess.PIPE, cwd=str(ROOT), preexec_fn=pinned(args.daemon_cpu, args.realtime))
    stdout, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the bare client failed ({proc.returncode})")
    return json.loads(stdout.decode().strip().splitlines()[-1])


async def run_cells(cells: list[Cell], args: argparse.Namespace) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    missed: set[tuple[str, int, float]] = set()  # (protocol, devices, hz) that missed at fewer tags
    groups: dict[tuple[str, int, int], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.protocol, cell.tags, cell.devices), []).append(cell)
    for (proto, n, d), group in groups.items():
        todo = [c for c in group if not (args.skip_after_miss and (proto, d, c.hz) in missed)]
        for c in group:
            if c not in todo:
                results.append({"cell": c.name, "skipped": "a smaller configuration missed deadlines at this rate"})
        if not todo:
            continue
        # one twin serves every rate
        async with TwinProcess(group[0], args.twin_cpu, args.twin_realtime, args.twin_freeze_gc) as twin:
            for cell in todo:
                print(f"# {cell.name} ...", file=sys.stderr, flush=True)
                load0 = os.getloadavg()
                with tempfile.TemporaryDirectory(prefix="edgewarden-cycle-") as d_:
                    tmp = Path(d_)
                    res: dict[str, Any] = {"cell": cell.name, "protocol": cell.protocol, "tags": cell.tags,
                                           "devices": cell.devices, "hz": cell.hz}
                    try:
                        res["gateway"] = await run_daemon(cell, twin, tmp, args)
                        if args.bare_seconds > 0:
                            res["bare"] = await run_bare(cell, twin, tmp, args)
                    except (RuntimeError, AssertionError, TimeoutError, OSError) as exc:  # OSError: it died
                        log = tmp / "gateway.log"
                        res["error"] = (str(exc) + (f"; daemon log: {log.read_text()[-400:]}" if log.exists() else ""))[:900]
                    if args.keep is not None:  # the whole trace, the daemon's log and config, for a closer look
                        keep = args.keep / cell.name.replace(":", "_")
                        shutil.copytree(tmp, keep, dirs_exist_ok=True, ignore=shutil.ignore_patterns("audit", "*.sock"))
                        res["kept"] = str(keep)
                res["loadavg"] = [round(x, 2) for x in (*load0, *os.getloadavg())]
                results.append(res)
                if res.get("error") or res["gateway"]["misses"] > 0:
                    missed.add((proto, d, cell.hz))
                print(row(res), file=sys.stderr, flush=True)
    return results


def ratio(res: dict[str, Any], stage: str) -> float:
    b = res.get("bare", {}).get(stage)
    if not b:
        return float("nan")
    return res["gateway"]["stages"][stage]["median"] / b["median"]


HEADER = (f"{'cell':<24} {'Hz got':>8} {'miss':>5} {'hold':>5} {'late med':>8} {'p99':>7} {'p99.9':>7} {'max':>7} "
          f"{'gw CPU':>6} {'twin':>5} {'read':>7} {'bare':>7} {'x':>5} {'write':>6} {'bare':>6} {'x':>5} "
          f"{'infer x':>7} {'e-stop p99':>10} {'gc max':>7} {'gc>T/2':>6}")


def row(res: dict[str, Any]) -> str:
    if "skipped" in res:
        return f"{res['cell']:<24} skipped: {res['skipped']}"
    if "error" in res:
        return f"{res['cell']:<24} error: {res['error'][:150]}"
    g = res["gateway"]
    late, st = g["lateness"], g["stages"]
    b = res.get("bare", {})
    estop = g.get("estop_us")
    return (f"{res['cell']:<24} {g['rate_hz']:8.2f} {g['misses']:5d} {g.get('holds', 0):5d} {late['median']:8.0f} {late['p99']:7.0f} "
            f"{late['p999']:7.0f} {late['max']:7.0f} {g['daemon_cpu'] * 100:5.0f}% {g['twin_cpu'] * 100:4.0f}% "
            f"{st['read']['median']:7.0f} {b.get('read', {}).get('median', float('nan')):7.0f} "
            f"{ratio(res, 'read'):5.2f} {st['write']['median']:6.0f} {b.get('write', {}).get('median', float('nan')):6.0f} "
            f"{ratio(res, 'write'):5.2f} {ratio(res, 'infer'):7.2f} "
            f"{np.percentile(estop, 99) / 1000 if estop else float('nan'):8.2f}ms "
            f"{g['stages']['gc']['max']:7.0f} {g['gc_stalls']:6d}")


def budget(res: dict[str, Any]) -> str:
    g = res["gateway"]
    cells = " ".join(f"{g['stages'][s]['median']:6.0f}/{g['stages'][s]['p99']:<6.0f}" for s in STAGES)
    return f"{res['cell']:<24} {cells} {g['work']['median']:6.0f}/{g['work']['p99']:<6.0f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cell_options(ap)
    ap.add_argument("--bare-seconds", type=float, default=5.0, help="bare client run per cell (0: none)")
    ap.add_argument("--skip-after-miss", action=argparse.BooleanOptionalAction, default=True,
                    help="skip a cell when fewer tags already missed deadlines at that protocol and rate")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--keep", type=Path, default=None, help="copy each cell's timing trace, daemon log and "
                    "config here (trace.npy: every cycle, columns edgewarden.gateway.timing.TRACE_FIELDS)")
    ap.add_argument("--bare", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare is not None:
        from edgewarden.gateway import timing
        from edgewarden.gateway.config import GatewaySection

        res = timing.run(bare(json.loads(args.bare)), GatewaySection(event_loop=args.event_loop))
        print(json.dumps(res))
        return 0
    cells = cells_of(args)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    results = asyncio.run(run_cells(cells, args))
    print(f"# bench_cycle  {started}  {machine()}")
    print(f"# {args.seconds:g} s per cell after {args.warmup:g} s warm-up; busy_wait_us={args.busy_wait_us:g}, "
          f"event_loop={args.event_loop}, gc={args.gc}, write_ack={args.write_ack}, "
          f"realtime={args.realtime or 'no'}, twin CPU {args.twin_cpu} "
          f"(FIFO {args.twin_realtime or 'no'}), "
          f"daemon CPU {args.daemon_cpu}; times in µs; read/write: gateway stage vs bare library median, "
          f"ratio x; load avg at start/end of each cell in the JSON")
    print(HEADER)
    for res in results:
        print(row(res))
    print()
    print("# per-stage budget, median/p99 µs (timing trace, every cycle of the window)")
    print(f"{'cell':<24} " + " ".join(f"{s:>13}" for s in STAGES) + f" {'work':>13}")
    for res in results:
        if "gateway" in res:
            print(budget(res))
    print()
    print("# besides the daemon's own work, over each window: hypervisor steal per CPU (ms), each daemon "
          "thread's time runnable but not running (ms), cycles whose work + GC passed the period")
    for res in results:
        g = res.get("gateway", {})
        if "steal_ms" in g:
            waits = ", ".join(f"{k} {v:g}" for k, v in sorted(g["runnable_wait_ms"].items(), key=lambda kv: -kv[1])[:5])
            tg = g.get("twin_gc", {})
            print(f"{res['cell']:<24} steal {g['steal_ms']}  wait {waits}  slow cycles {g['slow_cycles']}  "
                  f"twin GC: {tg.get('gc_collections')} collections, longest {tg.get('gc_max_ms', 0):.1f} ms")
    if args.json is not None:
        args.json.write_text(json.dumps({"started": started, "machine": machine(), "args": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "results": results}, indent=1))
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
