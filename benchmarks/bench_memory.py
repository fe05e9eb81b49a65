"""Memory: the daemon's RSS stays flat over a long run at 100 Hz against the CSTR twin.

Target (issue 9): RSS grows by at most 5 % after warm-up over a 10-minute run.

The twin (OPC UA server, PLC scan, plant) runs in this process; the daemon runs as a
subprocess exactly as systemd starts it (``edgewarden run``), at ``--hz`` (100) with
``auto_start``, over Modbus TCP by default (``--transport opcua`` for OPC UA), so it is in AUTO writing policy actions, audited every cycle. Its RSS
(``VmRSS`` from /proc) is sampled every ``--sample`` seconds. Warm-up is the first
``--warmup`` fraction of the run (allocator pools, import-time caches, the first audit
segment's buffers); growth = (median RSS of the last 10 % of samples) / (RSS at the end of
warm-up) − 1. Also reported: cycles, deadline misses, and the gateway's /metrics counters.

    .venv/bin/python benchmarks/bench_memory.py               # 60 s (a smoke run)
    .venv/bin/python benchmarks/bench_memory.py --minutes 10  # the run the target is about
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _common import machine, rss_kib

from edgewarden.gateway.example_config import EXAMPLES, adapt_example
from edgewarden.gateway.ops.control import send_command
from edgewarden.simulators.twin import Twin


def write_config(tmp: Path, twin: Twin, hz: float, transport: str) -> Path:
    return adapt_example(
        tmp, example=EXAMPLES / ("cstr_modbus.toml" if transport == "modbus" else "cstr.toml"),
        modbus_port=twin.modbus_port if transport == "modbus" else None,
        opcua_url=None if transport == "modbus" else twin.opcua_url,
        replace={r"^cycle_hz = 10.0": f"cycle_hz = {hz}", r"^auto_start = false": "auto_start = true",
                 # a memory run: overruns on a busy machine are counted and reported, not tripped on
                 r"^max_consecutive_overruns = 5\b": "max_consecutive_overruns = 1000000"})


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for name in ("edgewarden_cycles_total", "edgewarden_deadline_misses_total", "edgewarden_audit_records_total"):
        m = re.search(rf"^{name} ([0-9.e+]+)$", text, flags=re.M)
        out[name] = float(m.group(1)) if m else float("nan")
    return out


async def run(seconds: float, hz: float, sample_s: float, warmup: float, tmp: Path, transport: str) -> dict:
    async with Twin("cstr", opcua=("127.0.0.1", 0), modbus=("127.0.0.1", 0), watchdog_ms=500) as twin:
        config = write_config(tmp, twin, hz, transport)
        log = (tmp / "gateway.log").open("wb")
        env = {**os.environ, "EDGEWARDEN_LOGGING__FORMAT": "json"}
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "edgewarden.gateway.cli", "run", "--config",
                                                    str(config), stdout=log, stderr=log, env=env)
        sock = tmp / "control.sock"
        try:
            st: dict = {}
            for _ in range(200):
                try:
                    st = await send_command(sock, {"cmd": "status"})
                    if st.get("mode") == "AUTO":
                        break
                except Exception:  # noqa: BLE001 (not up yet)
                    pass
                await asyncio.sleep(0.1)
            if st.get("mode") != "AUTO":
                raise SystemExit(f"the gateway did not reach AUTO: {st}; log in {tmp / 'gateway.log'}")
            port = st["metrics_port"]
            samples: list[tuple[float, int]] = []
            t0 = time.monotonic()
            while (now := time.monotonic() - t0) < seconds:
                samples.append((now, rss_kib(proc.pid)))
                await asyncio.sleep(sample_s)
            samples.append((time.monotonic() - t0, rss_kib(proc.pid)))
            counters = await asyncio.to_thread(scrape, port)
            final = await send_command(sock, {"cmd": "status"})
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)
            log.close()
    warm_end = seconds * warmup
    after = [kib for t, kib in samples if t >= warm_end]
    base = after[0]
    tail = after[-max(1, len(after) // 10):]
    end = statistics.median(tail)
    return {
        "seconds": seconds, "hz": hz, "transport": transport, "samples": len(samples),
        "rss_start_kib": samples[0][1], "rss_after_warmup_kib": base, "rss_end_kib": end,
        "rss_max_kib": max(k for _, k in samples),
        "growth_after_warmup": end / base - 1.0,
        "mode_at_end": final.get("mode"), "exit_code": proc.returncode, **counters,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--minutes", type=float, default=None, help="overrides --seconds")
    ap.add_argument("--hz", type=float, default=100.0)
    ap.add_argument("--sample", type=float, default=1.0, help="RSS sampling interval, s")
    ap.add_argument("--warmup", type=float, default=0.2, help="fraction of the run counted as warm-up")
    ap.add_argument("--transport", choices=["modbus", "opcua"], default="modbus",
                    help="how the daemon talks to the twin (Modbus TCP is the cheaper one at 100 Hz)")
    ap.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = ap.parse_args()
    seconds = args.minutes * 60 if args.minutes is not None else args.seconds
    with tempfile.TemporaryDirectory(prefix="edgewarden-mem-") as d:
        res = asyncio.run(run(seconds, args.hz, args.sample, args.warmup, Path(d), args.transport))
    res["machine"] = machine()
    print(f"{seconds:.0f} s at {args.hz:g} Hz over {args.transport}: RSS {res['rss_start_kib'] / 1024:.1f} MiB at start, "
          f"{res['rss_after_warmup_kib'] / 1024:.1f} MiB after warm-up, {res['rss_end_kib'] / 1024:.1f} MiB at "
          f"the end (max {res['rss_max_kib'] / 1024:.1f}): growth {res['growth_after_warmup'] * 100:+.2f} % "
          f"(target <= 5 %)")
    print(f"cycles {res['edgewarden_cycles_total']:.0f}, deadline misses "
          f"{res['edgewarden_deadline_misses_total']:.0f}, audit records {res['edgewarden_audit_records_total']:.0f}, "
          f"mode at the end {res['mode_at_end']}, exit {res['exit_code']}")
    if args.json is not None:
        args.json.write_text(json.dumps(res, indent=2))
    return 0 if res["growth_after_warmup"] <= 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())
