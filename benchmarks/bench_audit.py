"""Audit log: sustained records/s, commit latency, and the caller's cost per append.

Target: >= 50k records/s sustained with chaining and group commit, <= 10 us
per record on the control cycle's side, for ~300-byte records.

Three runs, each on a fresh log in a temporary directory (pass --dir to put it on the
disk you care about: /tmp may be tmpfs, where fsync is free):

* burst: one thread appends N records as fast as it can, then ``flush()``; records/s is
  N over the time to the end of the flush (everything chained, written and fsynced).
  Commit latency is write + fsync of one group, from the writer's ``on_commit``.
* paced: appends at a fixed rate (default 1000/s, a busy control cycle with events),
  each timed alone with perf_counter_ns: the cost the cycle sees, writer thread and GIL
  included.
* owned: the sustained run with ``append_owned`` (the cycle's hand-off: encoded on the
  writer thread), and paced appends both ways, warm and with the caches flushed first.
* durable: ``append_durable`` round trips (a safety event waiting for its fsync).
* signed: the sustained run again with Ed25519 checkpoints every ``--checkpoint-every``
  records, exported to a file (fsynced), and the cost of one signature.

    .venv/bin/python benchmarks/bench_audit.py [--records 200000] [--rate 1000] [--dir PATH]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import machine

from edgewarden.gateway.audit import AuditWriter, verify
from edgewarden.gateway.audit.checkpoint import Signer, generate_keypair, load_public_key, read_exported
from edgewarden.gateway.audit.record import encode_payload


def cycle_payload(i: int) -> dict:
    """The record edgewarden/gateway/cycle.py hands over every cycle, field for field: 8 observations,
    2 actions, no interlock active (a ``null``: the encoder then screens the payload for
    NaN/inf, which orjson would write as ``null`` too)."""
    return {
        "n": i,
        "mode": "AUTO",
        "obs": [71.25 + (i % 7) * 0.01, 68.5, 2.031, 12.75, 48.2, 35.0, 0.5, 1.0],
        "verdict": "ok",
        "interlocks": None,
        "proposed": [41.7 + (i % 5) * 0.1, 12.5],
        "written": [41.7 + (i % 5) * 0.1, 12.5],
        "hb": i % 2**32,
        "model": "3f2a9c0d1e4b5a67",
    }


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def sustained(directory: Path, n: int, offered: float, interval: float, owned: bool = False,
              **writer_kw: object) -> dict[str, float]:
    """Offer ``offered`` records/s in 1 ms ticks (an event loop that appends a burst, then
    sleeps); records/s is n over the time until the last one is fsynced."""
    latencies: list[float] = []
    w = AuditWriter(directory, commit_interval_s=interval,
                    on_commit=lambda lat, _n, _b: latencies.append(lat), **writer_kw).open()  # type: ignore[arg-type]
    payloads = [cycle_payload(i) for i in range(1000)]
    append = w.append_owned if owned else w.append  # owned: never changed after, as the cycle's
    per_tick = max(1, round(offered / 1000))
    max_pending = 0
    in_append = 0.0
    t0 = time.perf_counter()
    next_t = t0
    i = 0
    while i < n:
        ta = time.perf_counter()
        for _ in range(min(per_tick, n - i)):
            append("cycle", payloads[i % 1000])
            i += 1
        in_append += time.perf_counter() - ta
        max_pending = max(max_pending, w.stats().pending)
        next_t += 0.001
        delay = next_t - time.perf_counter()
        time.sleep(max(0.0, delay))
    w.flush()
    t_durable = time.perf_counter()
    stats = w.stats()
    w.close()
    return {
        "rate": n / (t_durable - t0),
        "caller_us": in_append / n * 1e6,
        "commit_p50_ms": pct(latencies, 0.5) * 1e3,
        "commit_p99_ms": pct(latencies, 0.99) * 1e3,
        "commits": stats.commits,
        "max_pending": max_pending,
        "bytes_per_record": stats.bytes_written / n,
        "checkpoints": stats.checkpoints,
    }


def paced(directory: Path, n: int, rate: float, interval: float, owned: bool = False,
          flush_kib: int = 0) -> dict[str, float]:
    """One append per tick at ``rate``/s, sleeping between: each append timed alone, and
    how late the producer wakes (the GIL wait the writer thread can cause). ``flush_kib``:
    before each append, write that much memory (a cycle's read stage leaves the caches
    full of protocol data: this is the cost the cycle sees)."""
    latencies: list[float] = []
    costs: list[float] = []
    late: list[float] = []
    w = AuditWriter(directory, commit_interval_s=interval,
                    on_commit=lambda lat, _n, _b: latencies.append(lat)).open()
    append = w.append_owned if owned else w.append
    junk = np.zeros(flush_kib * 128)
    period = 1.0 / rate
    next_t = time.perf_counter() + period
    for i in range(n):
        time.sleep(max(0.0, next_t - time.perf_counter()))
        late.append(time.perf_counter() - next_t)
        if flush_kib:
            junk += 1.0
        p = cycle_payload(i)
        t0 = time.perf_counter_ns()
        append("cycle", p)
        costs.append((time.perf_counter_ns() - t0) / 1e3)
        next_t += period
    w.close()
    return {"p50_us": pct(costs, 0.5), "p99_us": pct(costs, 0.99), "max_us": max(costs),
            "late_p99_us": pct(late, 0.99) * 1e6, "late_max_us": max(late) * 1e6,
            "commit_p50_ms": pct(latencies, 0.5) * 1e3, "commit_p99_ms": pct(latencies, 0.99) * 1e3}


def baseline_lateness(n: int, rate: float) -> dict[str, float]:
    """The same paced sleep loop with no audit writer: this machine's own wake-up noise."""
    late: list[float] = []
    period = 1.0 / rate
    next_t = time.perf_counter() + period
    for _ in range(n):
        time.sleep(max(0.0, next_t - time.perf_counter()))
        late.append(time.perf_counter() - next_t)
        next_t += period
    return {"late_p99_us": pct(late, 0.99) * 1e6, "late_max_us": max(late) * 1e6}


def free_running(directory: Path, n: int, interval: float) -> dict[str, float]:
    """Append as fast as one thread can, never yielding; the caller's cost per append."""
    w = AuditWriter(directory, commit_interval_s=interval).open()
    payloads = [cycle_payload(i) for i in range(1000)]
    append = w.append
    t0 = time.perf_counter()
    for i in range(n):
        append("cycle", payloads[i % 1000])
    t1 = time.perf_counter()
    w.flush()
    t2 = time.perf_counter()
    w.close()
    return {"caller_us": (t1 - t0) / n * 1e6, "rate": n / (t2 - t0)}


def durable(directory: Path, n: int) -> dict[str, float]:
    w = AuditWriter(directory).open()
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        w.append_durable("trip", {"code": "BENCH", "i": i})
        times.append(time.perf_counter() - t0)
    w.close()
    ms = [t * 1e3 for t in times]
    return {"p50_ms": pct(ms, 0.5), "p99_ms": pct(ms, 0.99)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--offered", type=float, default=100_000.0, help="records/s offered in the sustained run")
    ap.add_argument("--rate", type=float, default=1000.0, help="appends/s in the paced run")
    ap.add_argument("--paced-records", type=int, default=5000)
    ap.add_argument("--interval", type=float, default=0.01, help="commit_interval_s")
    ap.add_argument("--dir", type=Path, default=None, help="parent directory for the logs")
    ap.add_argument("--flush-kib", type=int, default=8192, help="memory written before each timed append "
                    "in the cold runs (a cycle's read stage evicts the caches)")
    ap.add_argument("--checkpoint-every", type=int, default=10_000, help="records per signed checkpoint")
    args = ap.parse_args()

    size = len(encode_payload({**cycle_payload(1), "kind": "cycle", "t_wall": time.time(),
                               "t_mono": time.monotonic()}))
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        b = sustained(root / "sustained", args.records, args.offered, args.interval)
        ok = verify(root / "sustained")
        assert ok.ok and ok.records == args.records, ok.error
        f = free_running(root / "free", args.records // 4, args.interval)
        p = paced(root / "paced", args.paced_records, args.rate, args.interval)
        bo = sustained(root / "sustained-owned", args.records, args.offered, args.interval, owned=True)
        ok = verify(root / "sustained-owned")
        assert ok.ok and ok.records == args.records, ok.error
        cold = {(owned, flush): paced(root / f"cold-{owned}-{flush}", args.paced_records, args.rate,
                                      args.interval, owned=owned, flush_kib=flush)
                for owned in (False, True) for flush in (0, args.flush_kib)}
        base = baseline_lateness(args.paced_records, args.rate)
        d = durable(root / "durable", 500)
        generate_keypair(root / "k", root / "k.pub")
        signer = Signer.from_file(root / "k")
        sg = sustained(root / "signed", args.records, args.offered, args.interval, signer=signer,
                       checkpoint_every_records=args.checkpoint_every, checkpoint_export=root / "cp.jsonl")
        ok = verify(root / "signed", pubkey=load_public_key(root / "k.pub"),
                    checkpoints=read_exported(root / "cp.jsonl"))
        assert ok.ok, ok.error
        t0 = time.perf_counter()
        for i in range(2000):
            signer.sign(i, bytes(32), i)
        sign_us = (time.perf_counter() - t0) / 2000 * 1e6

    print(f"audit log benchmark: {machine()}; "
          f"payload {size} B JSON, {b['bytes_per_record']:.0f} B/record framed, "
          f"commit_interval_s={args.interval}, logs under {args.dir or tempfile.gettempdir()}")
    rows = [
        (f"sustained records/s (offered {args.offered:,.0f}/s in 1 ms ticks)", f"{b['rate']:,.0f}", ">= 50,000"),
        ("  max records pending in that run", f"{b['max_pending']:,}", ""),
        ("  caller cost per append, mean (us)", f"{b['caller_us']:.2f}", "<= 10"),
        ("  commit latency (write+fsync) p50 / p99 (ms)",
         f"{b['commit_p50_ms']:.2f} / {b['commit_p99_ms']:.2f}", ""),
        ("free-running producer: caller cost per append (us)", f"{f['caller_us']:.2f}", "<= 10"),
        ("free-running producer: records/s to durable", f"{f['rate']:,.0f}", ""),
        (f"paced {args.rate:.0f}/s: append cost p50 / p99 / max (us)",
         f"{p['p50_us']:.2f} / {p['p99_us']:.2f} / {p['max_us']:.0f}", "<= 10"),
        (f"paced {args.rate:.0f}/s: producer wake lateness p99 / max (us)",
         f"{p['late_p99_us']:.0f} / {p['late_max_us']:.0f}", ""),
        ("same loop without a writer: wake lateness p99 / max (us)",
         f"{base['late_p99_us']:.0f} / {base['late_max_us']:.0f}", ""),
        (f"paced {args.rate:.0f}/s: commit latency p50 / p99 (ms)",
         f"{p['commit_p50_ms']:.2f} / {p['commit_p99_ms']:.2f}", ""),
        ("append_owned (the cycle's hand-off), sustained records/s", f"{bo['rate']:,.0f}", ">= 50,000"),
        ("  caller cost per append_owned, mean (us)", f"{bo['caller_us']:.2f}", "<= 10"),
        *((f"paced {args.rate:.0f}/s, {'append_owned' if owned else 'append'}"
           f"{f', {flush:,} KiB written before each' if flush else ''}: p50 / p99 / max (us)",
           f"{c['p50_us']:.2f} / {c['p99_us']:.2f} / {c['max_us']:.0f}", "<= 10")
          for (owned, flush), c in cold.items()),
        ("append_durable round trip p50 / p99 (ms)", f"{d['p50_ms']:.2f} / {d['p99_ms']:.2f}", ""),
        (f"signed checkpoint every {args.checkpoint_every:,}: sustained records/s", f"{sg['rate']:,.0f}", ">= 50,000"),
        ("  checkpoints written / caller cost per append (us)",
         f"{sg['checkpoints']} / {sg['caller_us']:.2f}", ""),
        ("  commit latency p50 / p99 (ms)", f"{sg['commit_p50_ms']:.2f} / {sg['commit_p99_ms']:.2f}", ""),
        ("Ed25519 signature of one checkpoint (us)", f"{sign_us:.0f}", ""),
    ]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    print(f"{'measure':<{w0}}  {'value':>{w1}}  target")
    for name, value, target in rows:
        print(f"{name:<{w0}}  {value:>{w1}}  {target}")


if __name__ == "__main__":
    main()
