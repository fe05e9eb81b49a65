"""Safety supervisor: per-cycle cost of the checks, and e-stop latency.

1. ``checker + interlocks + shield`` per cycle for 8, 64 and 512 tags: half the tags are
   observations (valid range, staleness, hard/soft/rate limits), the other half actions
   (bounds, rate limits), plus four interlocks. One timed sample is exactly the cycle's
   safety work: ``checker.check`` → ``interlocks.bounds`` → ``shield.apply``, on readings
   that change every cycle (received this cycle, values that move, proposals that sometimes
   need clipping). Both backends side by side: the compiled kernel (``c``) and the numpy
   fallback, interleaved in blocks so that load changes hit both alike, and the three
   stages timed apart. Goal: 64 tags ≤ 20 µs p99.

2. E-stop "detection → safe write issued": a real ControlLoop (CSTR config, shipped ONNX
   policy) on an in-memory transport whose ``write`` timestamps its entry. Two figures:
   ``estop.trip(...)`` called → write entered (the trip path itself), and ``loop.step()``
   entered with a hard-limit breach in the plant → write entered (read + checks + trip).
   Each trip runs from AUTO; between trips: conditions cleared, one cycle in ESTOP, reset, one cycle
   to READY, start, one cycle in AUTO. Goal: ≤ 200 µs p99.

3. E-stop "trigger → safe outputs observed at the twin": the CSTR twin (asyncua server,
   PLC scan) in this process, the gateway daemon as a subprocess (as systemd runs it), an
   operator e-stop sent over the control socket; a thread polls the twin's image every
   0.5 ms for the safe setpoints. Compared with one cycle period plus one OPC UA round
   trip (measured here against the same twin). Goal: within that.

4. Figure 3 again while other processes flood the control socket (``--flood``): a local
   user who is not an operator (``other-uid``, uid 65534: needs root) or the operator's own
   uid (``same-uid``), each client connecting as fast as it can and holding 200
   connections; with the daemon's deadline misses meanwhile.

    .venv/bin/python benchmarks/bench_safety.py [--iterations 20000] [--trips 2000] [--twin-trips 25]
        [--checks-only] [--skip-trip-path] [--flood none,other-uid,same-uid] [--flood-procs 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import ROOT, machine, summary_us, wait_for

from edgewarden.gateway.config import Settings, load_config
from edgewarden.gateway.example_config import adapt_example
from edgewarden.gateway.io.memory import MemoryTransport
from edgewarden.gateway.io.tags import Quality, Snapshot, TagMap
from edgewarden.gateway.safety.backend import kernel_module
from edgewarden.gateway.safety.checker import ObservationChecker, Status
from edgewarden.gateway.safety.interlocks import Interlocks
from edgewarden.gateway.safety.shield import ActionShield

SHIPPED = ROOT / "models" / "cstr_baseline.onnx"
SAFE = {"coolant_flow_sp": 200.0, "feed_flow_sp": 0.0}
HEALTHY = {"T": 350.0, "CA": 0.5, "Tj": 332.0, "T_sp": 350.0, "plc_estop": 0.0, "plc_auto": 1.0,
           "plc_remote": 1.0, "plc_watchdog": 0.0,
           "coolant_flow_sp": 100.0, "feed_flow_sp": 100.0, "coolant_flow": 100.0, "feed_flow": 100.0}


def stats_us(ns: np.ndarray | list[int]) -> dict[str, float]:
    return summary_us(ns, 1e-3)


def fmt(s: dict[str, float]) -> str:
    return f"{s['median']:8.1f} {s['p99']:8.1f} {s['max']:9.1f}"


# ---- 1. checks + interlocks + shield --------------------------------------------------------
def synthetic_settings(n_tags: int) -> Settings:
    n_obs = n_tags // 2
    n_act = n_tags - n_obs
    tags: dict[str, Any] = {"hb": {"connection": "plc", "node": "ns=2;s=hb", "datatype": "uint32", "writable": True}}
    limits, actions, interlocks = {}, {}, {}
    for i in range(n_obs):
        tags[f"o{i}"] = {"connection": "plc", "node": f"ns=2;s=o{i}", "range": [-1000.0, 1000.0], "stale_ms": 1000}
        limits[f"o{i}"] = {"hard": [-100.0, 100.0], "soft": [-50.0, 50.0], "max_rate": 1000.0}
    for i in range(n_act):
        tags[f"a{i}"] = {"connection": "plc", "node": f"ns=2;s=a{i}", "writable": True}
        actions[f"a{i}"] = {"min": 0.0, "max": 100.0, "max_rate": 500.0, "safe": 0.0}
    for k in range(4):
        interlocks[f"il{k}"] = {"when": f"o{k % n_obs} >= {10.0 * k} and o{(k + 1) % n_obs} < 90",
                                "then": f"a{k % n_act} <= {80 - 10 * k}"}
    return Settings(
        connections={"plc": {"type": "opcua", "url": "opc.tcp://127.0.0.1:4840"}},
        tags=tags,
        policy={"path": "policy.onnx", "observations": [f"o{i}" for i in range(n_obs)],
                "actions": [f"a{i}" for i in range(n_act)]},
        safety={"heartbeat_tag": "hb", "limits": limits, "actions": actions, "interlocks": interlocks},
    )


class SafetyRig:
    """The cycle's safety objects for one backend, on a synthetic plant of ``n_tags``."""

    def __init__(self, n_tags: int, backend: str, seed: int) -> None:
        s = synthetic_settings(n_tags)
        tags = TagMap.from_settings(s)
        self.checker = ObservationChecker(s, tags, backend)
        self.interlocks = Interlocks(s, self.checker.names, backend)
        self.shield = ActionShield(s, backend)
        assert {self.checker.backend, self.interlocks.backend, self.shield.backend} == {backend}
        n_act = len(self.shield.names)
        rng = np.random.default_rng(seed)
        self.snap = Snapshot(len(tags.readable))
        self.snap.quality[:] = Quality.GOOD
        # readings spread over ±60 (a few outside the soft limits, none beyond the hard ones) that
        # move by at most ±1 per cycle (well inside max_rate * dt = 10)
        base = rng.uniform(-59.0, 59.0, size=len(tags.readable))
        self.values = base + rng.uniform(-0.5, 0.5, size=(VARIANTS, len(tags.readable)))
        self.proposals = rng.uniform(-10.0, 110.0, size=(VARIANTS, n_act))  # some need clipping
        self.last = np.full(n_act, 50.0)
        self.out = np.zeros(n_act)
        self.now = 1000.0
        self.k = 0
        self.statuses = np.zeros(3, dtype=np.int64)

    def run(self, total: np.ndarray, stages: np.ndarray, at: int, count: int) -> None:
        """``count`` cycles; the timings of those with ``at + i >= 0`` go to row ``at + i``."""
        perf = time.perf_counter_ns
        checker, interlocks, shield, snap, last, out = (self.checker, self.interlocks, self.shield, self.snap,
                                                        self.last, self.out)
        dt = DT
        for i in range(count):
            j = self.k % VARIANTS
            snap.values[:] = self.values[j]
            self.now += dt
            snap.recv_mono[:] = self.now  # received this cycle: freshness is the gateway's receive time
            self.k += 1
            proposed = self.proposals[j]
            t0 = perf()
            verdict = checker.check(snap, self.now)
            t1 = perf()
            lo, hi = interlocks.bounds(checker.values)
            t2 = perf()
            res = shield.apply(proposed, last, dt, out, lo, hi)
            t3 = perf()
            if at + i >= 0:
                total[at + i] = t3 - t0
                stages[at + i] = (t1 - t0, t2 - t1, t3 - t2)
                self.statuses[verdict.status] += 1
            if res.ok:
                last[:] = out


VARIANTS, DT, BLOCK = 256, 0.01, 1000


def bench_checks(n_tags: int, iterations: int, seed: int, backends: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Per backend: stats of the whole safety work per cycle and of each stage (µs)."""
    rigs = {b: SafetyRig(n_tags, b, seed) for b in backends}
    total = {b: np.empty(iterations, dtype=np.int64) for b in backends}
    stages = {b: np.empty((iterations, 3), dtype=np.int64) for b in backends}
    warmup = min(2000, iterations)
    gc.collect()
    # interleaved blocks: a burst of load on the shared machine lands on every backend alike
    for at in range(-warmup, iterations, BLOCK):
        for b in backends:
            rigs[b].run(total[b], stages[b], at, min(BLOCK, iterations - at))
    out = {}
    for b, rig in rigs.items():
        assert rig.statuses[Status.TRIP] == 0 and rig.statuses[Status.HOLD] == 0, rig.statuses
        out[b] = {"tags": n_tags, "obs": len(rig.checker.names), "actions": len(rig.shield.names),
                  **stats_us(total[b]), "stages": [float(np.median(stages[b][:, k])) / 1000.0 for k in range(3)],
                  "soft": rig.checker.verdict.soft_alarms}
    return out


# ---- 2. detection → safe write issued ---------------------------------------------------------
class TimedTransport(MemoryTransport):
    """Timestamps the entry of every write (before the plan check: that is part of the write)."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.write_entered_ns = 0

    async def write(self, plan: Any, values: Any, deadline: float | None = None) -> None:
        self.write_entered_ns = time.perf_counter_ns()
        await super().write(plan, values, deadline)


class NullAudit:
    def append(self, kind: str, payload: dict) -> int:
        return 0

    append_owned = append


def make_loop(tmp: Path) -> tuple[Any, TimedTransport]:
    from edgewarden.gateway.app import load_policy
    from edgewarden.gateway.cycle import ControlLoop
    from edgewarden.gateway.modes import ModeMachine
    from edgewarden.gateway.ops.metrics import Metrics

    s = load_config(adapt_example(tmp, policy=SHIPPED)).settings
    tags = TagMap.from_settings(s)
    transport = TimedTransport(tags, dict(HEALTHY))
    loop = ControlLoop(s, tags, transport, load_policy(s), ModeMachine(), NullAudit(), Metrics())
    return loop, transport


async def bench_trip_path(trips: int) -> tuple[dict[str, float], dict[str, float]]:
    from edgewarden.gateway.modes import Mode

    with tempfile.TemporaryDirectory() as d:
        loop, t = make_loop(Path(d))
        await loop.step()  # INHIBITED → READY
        trip_ns: list[int] = []
        step_ns: list[int] = []
        perf = time.perf_counter_ns

        async def to_auto() -> None:
            t.values["T"] = 350.0
            await loop.step()  # one cycle in ESTOP with the condition cleared (safe outputs again)
            loop.request_reset("bench")
            await loop.step()  # → READY
            loop.request_start("bench")
            await loop.step()  # one cycle in AUTO, writing policy actions
            assert loop.modes.mode == Mode.AUTO, loop.modes.mode

        loop.request_start("bench")
        await loop.step()
        gc.collect()
        for k in range(trips + 200):
            # (a) the trip path alone: estop.trip → write entered
            t0 = perf()
            await loop.estop.trip("hard_limit:T:high", "tag 'T' = 401 beyond its hard high limit 400")
            if k >= 200:
                trip_ns.append(t.write_entered_ns - t0)
            assert t.writes[-1]["feed_flow_sp"] == SAFE["feed_flow_sp"]
            await to_auto()
            # (b) a whole cycle that detects a hard-limit breach: step entered → write entered
            t.values["T"] = 401.0
            t0 = perf()
            await loop.step()
            if k >= 200:
                step_ns.append(t.write_entered_ns - t0)
            assert loop.estop.last is not None and loop.estop.last.code == "hard_limit:T:high"
            assert loop.modes.mode == Mode.ESTOP and t.writes[-1]["coolant_flow_sp"] == SAFE["coolant_flow_sp"]
            await to_auto()
            t.writes.clear()
    return stats_us(trip_ns), stats_us(step_ns)


# ---- 3. trigger → safe outputs at the twin ----------------------------------------------------
class ImagePoller(threading.Thread):
    """Polls the twin's image every 0.5 ms; records when the safe setpoints first show."""

    def __init__(self, image: Any) -> None:
        super().__init__(daemon=True)
        self.image = image
        self.armed_ns = 0
        self.seen_ns = 0
        self.done = threading.Event()
        self.stop = False

    def arm(self) -> None:
        self.seen_ns = 0
        self.done.clear()
        self.armed_ns = time.perf_counter_ns()

    def run(self) -> None:
        image = self.image
        while not self.stop:
            if self.armed_ns and not self.done.is_set() and image["feed_flow_sp"] == SAFE["feed_flow_sp"] \
                    and image["coolant_flow_sp"] == SAFE["coolant_flow_sp"]:
                self.seen_ns = time.perf_counter_ns()
                self.done.set()
            time.sleep(0.0005)


async def opcua_round_trip(url: str, n: int = 500) -> dict[str, float]:
    from asyncua import Client

    async with Client(url=url, timeout=2.0) as client:
        nodes = [client.get_node(f"ns=2;s=cstr.{t}") for t in ("T", "CA", "Tj")]
        samples = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            await client.read_values(nodes)
            samples.append(time.perf_counter_ns() - t0)
    return stats_us(samples)


async def bench_twin(trips: int, cycle_hz: float, flood: str = "none", flood_procs: int = 2) -> dict[str, Any]:
    """``flood``: ``none``; ``other-uid`` (``flood_procs`` clients as uid 65534, a local
    user who is not an operator, flooding the control socket); ``same-uid`` (as this
    benchmark's own uid, the operator's)."""
    from edgewarden.gateway.errors import GatewayError
    from edgewarden.gateway.ops.control import send_command
    from edgewarden.simulators.twin import Twin

    async def status(sock: Path) -> dict[str, Any]:
        with contextlib.suppress(GatewayError, OSError):
            return await send_command(sock, {"cmd": "status"})
        return {}

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        tmp.chmod(0o755)  # the flood's uid must reach the socket
        async with Twin("cstr", opcua=("127.0.0.1", 0), modbus=None, watchdog_ms=500) as twin:
            image = twin.image
            config = adapt_example(tmp, policy=SHIPPED, opcua_url=twin.opcua_url, replace={
                r"^cycle_hz = 10.0": f"cycle_hz = {cycle_hz}",
                # fast ramps, so that the policy's setpoints are back within a cycle after start
                r"^max_rate = 100\.0": "max_rate = 100000.0",
                r"^max_rate = 50\.0": "max_rate = 100000.0",
            })
            sock = tmp / "control.sock"
            log = tmp / "gateway.log"
            with log.open("wb") as out:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "edgewarden.gateway.cli", "run", "--config", str(config),
                    stdout=out, stderr=out, cwd=str(ROOT))
            poller = ImagePoller(image)
            poller.start()
            samples: list[int] = []
            replies: list[int] = []
            floods: list[asyncio.subprocess.Process] = []
            try:
                async def ready() -> bool:
                    return (await status(sock)).get("mode") == "READY"

                async def policy_writing() -> bool:
                    return image["feed_flow_sp"] != SAFE["feed_flow_sp"]

                rtt = await opcua_round_trip(twin.opcua_url)
                await wait_for(ready, "READY")
                if flood != "none":
                    sock.chmod(0o666)  # bench only: the deployed socket is 0660
                    uid = ["--uid", "65534"] if flood == "other-uid" else []
                    floods = [await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "edgewarden.simulators.flood", str(sock), "3600", *uid, cwd=str(ROOT))
                        for _ in range(flood_procs)]
                    await asyncio.sleep(1.0)
                    assert all(f.returncode is None for f in floods), "a flood client died"
                before = (await status(sock))["stats"]
                for k in range(trips + 2):
                    await wait_for(ready, "READY")
                    reply = await send_command(sock, {"cmd": "start", "actor": "bench"})
                    assert reply.get("mode") == "AUTO", reply
                    await wait_for(policy_writing, "policy actions at the twin")
                    await asyncio.sleep(0.1 + 0.05 * (k % 7) / 7)  # trigger at varying cycle phases
                    poller.arm()
                    t0 = time.perf_counter_ns()
                    reply = await send_command(sock, {"cmd": "estop", "actor": "bench", "reason": "bench"})
                    t_reply = time.perf_counter_ns()
                    assert reply.get("tripped") is True, reply
                    await asyncio.to_thread(poller.done.wait, 5.0)
                    assert poller.done.is_set(), "safe outputs never arrived at the twin"
                    if k >= 2:  # the first trips warm up both processes
                        samples.append(poller.seen_ns - t0)
                        replies.append(t_reply - t0)
                    reply = await send_command(sock, {"cmd": "reset", "actor": "bench", "reason": "bench"})
                    assert reply.get("mode") in ("INHIBITED", "READY"), reply
                after = (await status(sock))["stats"]
            finally:
                for f in floods:
                    with contextlib.suppress(ProcessLookupError):
                        f.kill()
                    await f.wait()
                poller.stop = True
                if proc.returncode is not None:
                    print(log.read_text()[-3000:], file=sys.stderr)
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(proc.wait(), 15)
    return {"observed": stats_us(samples), "reply": stats_us(replies), "rtt": rtt,
            "period_ms": 1000.0 / cycle_hz, "cycles": after["cycles"] - before["cycles"],
            "deadline_misses": after["deadline_misses"] - before["deadline_misses"],
            "max_lateness_ms": after["max_lateness_s"] * 1000.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=20000)
    ap.add_argument("--trips", type=int, default=2000)
    ap.add_argument("--twin-trips", type=int, default=25)
    ap.add_argument("--cycle-hz", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-twin", action="store_true")
    ap.add_argument("--checks-only", action="store_true", help="only figure 1 (checks + shield)")
    ap.add_argument("--flood", default="none",
                    help="figure 3 under control-socket floods: comma list of none, other-uid (needs root), same-uid")
    ap.add_argument("--flood-procs", type=int, default=2, help="flooding client processes")
    ap.add_argument("--skip-trip-path", action="store_true", help="skip figure 2")
    args = ap.parse_args()

    print(f"machine: {machine()}")
    print(f"date:    {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print()
    backends = ("c", "numpy") if kernel_module() is not None else ("numpy",)
    if len(backends) == 1:
        print("(the compiled safety kernel is not built: numpy only)")
    print(f"checker + interlocks + shield per cycle ({args.iterations} iterations per backend, µs; "
          "stages: medians of check / bounds / apply)")
    print(f"{'tags':>5} {'monitored':>9} {'actions':>7} {'backend':>7} {'median':>8} {'p99':>8} {'p99.9':>8} "
          f"{'max':>9}   stages")
    for n in (8, 64, 512):
        for b, r in bench_checks(n, args.iterations, args.seed, backends).items():
            stages = " / ".join(f"{x:.2f}" for x in r["stages"])
            print(f"{r['tags']:5d} {r['obs']:9d} {r['actions']:7d} {b:>7} {r['median']:8.2f} {r['p99']:8.2f} "
                  f"{r['p999']:8.2f} {r['max']:9.1f}   {stages}")
    print("goal: 64 tags p99 <= 20 µs")
    print()
    if args.checks_only:
        return

    if not args.skip_trip_path:
        trip, step = asyncio.run(bench_trip_path(args.trips))
        print(f"e-stop detection → safe write issued ({trip['n']} trips from AUTO, µs)")
        print(f"{'path':<44} {'median':>8} {'p99':>8} {'max':>9}")
        print(f"{'estop.trip() called → transport.write entered':<44} {fmt(trip)}")
        print(f"{'step() with T > hard limit → write entered':<44} {fmt(step)}")
        print("goal: p99 <= 200 µs")
        print()

    for flood in ([] if args.skip_twin else args.flood.split(",")):
        r = asyncio.run(bench_twin(args.twin_trips, args.cycle_hz, flood, args.flood_procs))
        o, rtt = r["observed"], r["rtt"]
        if flood != "none":
            print(f"UNDER A CONNECTION FLOOD ({args.flood_procs} clients as {flood}, each connecting as fast as "
                  "it can and holding 200 connections)")
        bound_ms = r["period_ms"] + rtt["median"] / 1000.0
        print(f"operator e-stop (control socket) → safe setpoints in the twin's image "
              f"({o['n']} trips, gateway subprocess at {args.cycle_hz:g} Hz, ms)")
        print(f"{'':<40} {'median':>8} {'p99':>8} {'max':>9}")
        print(f"{'trigger → safe outputs at the twin':<40} {o['median'] / 1000:8.2f} {o['p99'] / 1000:8.2f} "
              f"{o['max'] / 1000:9.2f}")
        rp = r["reply"]
        print(f"{'trigger → estop command reply':<40} {rp['median'] / 1000:8.2f} {rp['p99'] / 1000:8.2f} "
              f"{rp['max'] / 1000:9.2f}")
        print(f"{'OPC UA read round trip (3 nodes)':<40} {rtt['median'] / 1000:8.2f} {rtt['p99'] / 1000:8.2f} "
              f"{rtt['max'] / 1000:9.2f}")
        print(f"goal: within one cycle + one round trip = {r['period_ms']:.1f} + {rtt['median'] / 1000:.2f} "
              f"= {bound_ms:.2f} ms: max {'meets' if o['max'] / 1000 <= bound_ms else 'MISSES'} it")
        print(f"the daemon meanwhile: {r['cycles']} cycles, {r['deadline_misses']} deadline misses, "
              f"max lateness since start {r['max_lateness_ms']:.2f} ms")
        print()


if __name__ == "__main__":
    main()
