"""Local scrapers against the cycle: deadline misses of a 100 Hz daemon with no scraper,
then with 16 scrape loops (each its own process, at nice 19) and 40 slowloris clients
(connections that trickle a request a byte every 0.2 s), in the same run; and how long
the operator's own scrape (one every 0.5 s) takes in each phase.

    python benchmarks/bench_scrape.py [--seconds 20] [--hz 100] [--json FILE]

The CSTR twin and the daemon (``edgewarden twin serve``, ``edgewarden run`` on the shipped
example config at ``--hz``) are subprocesses; results alone on stdout, the machine line
first. Figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import free_port, machine, wait_for

from edgewarden.data import MODELS
from edgewarden.gateway.example_config import adapt_example
from edgewarden.gateway.ops.control import send_command


def _scrape(port: int, path: str = "/metrics", timeout: float = 5.0) -> float:
    """Seconds to a whole answer; raises OSError when there is none."""
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        head = s.recv(64)
        if not head.startswith(b"HTTP/1.") or b" 200 " not in head:
            raise OSError(f"answer {head[:40]!r}")
        while s.recv(65536):
            pass
    return time.perf_counter() - t0


def _scrape_loop(port: int, stop_at: float, counts: Any, slot: int, ready: Any) -> None:
    os.nice(19)
    ready.release()
    while time.time() < stop_at:
        with contextlib.suppress(OSError):
            _scrape(port, timeout=2.0)
            counts[slot] += 1


def _slowloris(port: int, clients: int, stop_at: float, ready: Any) -> None:
    os.nice(19)
    ready.release()

    def one() -> None:
        while time.time() < stop_at:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                for byte in b"GET /metrics HTTP/1.1\r\nHost: slow\r\n":
                    s.sendall(bytes([byte]))
                    time.sleep(0.2)
                    if time.time() > stop_at:
                        return

    threads = [threading.Thread(target=one, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


async def _phase(sock: Path, port: int, seconds: float) -> dict[str, Any]:
    """Deadline misses and cycles over ``seconds``, with the operator's scrape every 0.5 s."""
    first = await send_command(sock, {"cmd": "status"})
    before = first["stats"]
    latencies, failed = [], 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            latencies.append(await asyncio.to_thread(_scrape, port))
        except OSError:
            failed += 1
        await asyncio.sleep(0.5)
    after = await send_command(sock, {"cmd": "status"})
    return {"cycles": after["stats"]["cycles"] - before["cycles"],
            "misses": after["stats"]["deadline_misses"] - before["deadline_misses"],
            "mode": after["mode"], "trips": after["trips"] - first["trips"],
            "last_trip": (after.get("last_trip") or {}).get("code"), "scrapes": len(latencies), "scrapes_failed": failed,
            "scrape_ms_median": 1000 * statistics.median(latencies) if latencies else None,
            "scrape_ms_max": 1000 * max(latencies) if latencies else None}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-scrape-"))
    opcua = free_port()
    twin = await asyncio.create_subprocess_exec(sys.executable, "-m", "edgewarden.gateway.cli", "twin", "serve", "cstr",
                                                "--opcua", f"127.0.0.1:{opcua}", stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.DEVNULL)
    await wait_for(lambda: _listening(opcua), "the twin's OPC UA server", timeout=60)
    config = adapt_example(tmp, opcua_url=f"opc.tcp://127.0.0.1:{opcua}", policy=MODELS / "cstr_baseline.onnx",
                           replace={r"^cycle_hz = 10.0": f"cycle_hz = {args.hz:g}"})
    sock = tmp / "var" / "control.sock"
    daemon = await asyncio.create_subprocess_exec(sys.executable, "-m", "edgewarden.gateway.cli", "run", "--config",
                                                  str(config), stdout=asyncio.subprocess.DEVNULL,
                                                  stderr=asyncio.subprocess.DEVNULL, env={**os.environ, "NOTIFY_SOCKET": ""})
    try:
        from edgewarden.gateway.config import load_config

        sock = load_config(config).settings.control.socket

        async def status() -> dict[str, Any]:
            with contextlib.suppress(OSError, Exception):
                return await send_command(sock, {"cmd": "status"})
            return {}

        await wait_for(lambda: _mode(status, "READY"), "READY", timeout=60)
        assert (await send_command(sock, {"cmd": "start", "actor": "bench"}))["ok"]
        st = await status()
        port = int(st["metrics_port"])
        await asyncio.sleep(args.warmup)
        quiet = await _phase(sock, port, args.seconds)
        stop_at = time.time() + args.seconds + 60.0  # the load outlasts the phase (its start is not timed)
        ctx = multiprocessing.get_context("forkserver")
        counts, ready = ctx.Array("q", args.loops, lock=False), ctx.Semaphore(0)
        loads = [ctx.Process(target=_scrape_loop, args=(port, stop_at, counts, i, ready)) for i in range(args.loops)]
        loads.append(ctx.Process(target=_slowloris, args=(port, args.slowloris, stop_at, ready)))
        for p in loads:
            p.start()
        for _ in loads:  # every load process started (their imports are not the phase's load)
            await asyncio.to_thread(ready.acquire)
        await asyncio.sleep(1.5)  # every client connected and hammering
        before = sum(counts)
        loaded = await _phase(sock, port, args.seconds)
        loaded["hostile_scrapes"] = sum(counts) - before
        for p in loads:
            p.terminate()
            await asyncio.to_thread(p.join, 30)
        return {"machine": machine(), "hz": args.hz, "seconds": args.seconds, "loops": args.loops,
                "slowloris": args.slowloris, "quiet": quiet, "loaded": loaded}
    finally:
        for proc in (daemon, twin):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 20)


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


async def _mode(status: Any, mode: str) -> bool:
    return (await status()).get("mode") == mode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--hz", type=float, default=100.0)
    ap.add_argument("--loops", type=int, default=16, help="scrape loops, one process each")
    ap.add_argument("--slowloris", type=int, default=40, help="trickling clients")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    res = asyncio.run(main_async(args))
    print(res["machine"])
    print(f"{args.hz:g} Hz, {args.seconds:g} s a phase; load: {args.loops} scrape loops (nice 19) "
          f"+ {args.slowloris} slowloris clients")
    print("| phase | cycles | deadline misses | trips (last) | operator scrapes ok / failed | scrape median / max (ms) |")
    print("|---|---|---|---|---|---|")
    for name in ("quiet", "loaded"):
        r = res[name]
        med = "-" if r["scrape_ms_median"] is None else f"{r['scrape_ms_median']:.1f} / {r['scrape_ms_max']:.1f}"
        trips = f"{r['trips']} ({r['last_trip']})" if r["trips"] else "0"
        print(f"| {name} | {r['cycles']} | {r['misses']} | {trips} | {r['scrapes']} / {r['scrapes_failed']} | {med} |")
    print(f"hostile scrapes answered during the loaded phase: {res['loaded']['hostile_scrapes']}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
