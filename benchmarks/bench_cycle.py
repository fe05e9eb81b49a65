"""Control cycle: rate, lateness, per-stage budget and scaling of the real daemon, each
I/O stage beside the bare library doing the same requests in the same run.

Per cell (protocol, tags, devices, rate):

1. A load twin (simulators/scale.py: a real asyncua server with N variables, or D real
   pymodbus servers with N registers between them) starts as its own process, pinned to
   CPU 0 (``--twin-cpu``).
2. The daemon (``edgewarden run``, a subprocess as under systemd) runs a generated config
   (N measurement tags, every one hard/soft-limited, so all N are checked each cycle; a
   linear ONNX policy reads the first 8; 2 outputs + heartbeat written each cycle) with
   ``cpu_affinity`` = CPU 1 (``--daemon-cpu``), ``auto_start`` and a timing trace. After
   ``--warmup`` s in AUTO, a window of ``--seconds`` s is measured: cycles, achieved rate,
   deadline misses (the daemon's own counter), daemon and twin CPU (/proc utime+stime),
   and from the trace (every cycle, exact; gateway/timing.py) the lateness against the
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
    .venv/bin/python benchmarks/bench_cycle.py --cells modbus:64x1:10 --interleave 100   # overhead, one process

A cell is ``PROTOCOL:TAGS[xDEVICES]:HZ`` with PROTOCOL opcua-poll, opcua-sub or modbus.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import contextlib
import json
import math
import os
import shutil
import signal
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_memory import rss_kib  # noqa: E402
from bench_safety import machine  # noqa: E402

from gateway.timing import TRACE_FIELDS  # noqa: E402
from simulators.scale import split  # noqa: E402
from tests.helpers import free_port  # noqa: E402

N_OBS, N_OUT = 8, 2
STAGES = ("read", "check", "infer", "shield", "write", "audit", "metrics", "gc")
FULL_TAGS = (8, 64, 512, 2000)
FULL_RATES = (10, 100, 500)
FULL_PROTOCOLS = (("opcua-poll", 1), ("opcua-sub", 1), ("modbus", 1), ("modbus", 4), ("modbus", 16))
SHORT_CELLS = "opcua-poll:8:100,modbus:64x2:100"


@dataclass(frozen=True)
class Cell:
    protocol: str  # opcua-poll | opcua-sub | modbus
    tags: int
    devices: int
    hz: float

    @classmethod
    def parse(cls, text: str) -> Cell:
        proto, tags, hz = text.split(":")
        n, _, d = tags.partition("x")
        if proto not in ("opcua-poll", "opcua-sub", "modbus"):
            raise SystemExit(f"unknown protocol {proto!r} in cell {text!r}")
        return cls(proto, int(n), int(d or 1), float(hz))

    @property
    def name(self) -> str:
        dev = f"x{self.devices}" if self.protocol == "modbus" else ""
        return f"{self.protocol}:{self.tags}{dev}:{self.hz:g}"


# ---- generated config -------------------------------------------------------------------------
def write_policy(path: Path) -> Path:
    """action_j = 50 + 0.01 · (obs_0 + … + obs_7): moves a little with the plant, never near 0."""
    from gateway.policy.contract import PolicyContract
    from training.onnx_export import build_linear_policy, write_model

    contract = PolicyContract(
        observation_tags=tuple(f"m{i}" for i in range(N_OBS)), observation_units=("u",) * N_OBS,
        action_tags=tuple(f"a{j}" for j in range(N_OUT)), action_units=("%",) * N_OUT,
        action_low=(0.0,) * N_OUT, action_high=(100.0,) * N_OUT, algorithm="bench-linear",
        dataset_hash="none", training_config={}, input_name="obs", output_name="action")
    write_model(path, build_linear_policy(contract, np.full((N_OUT, N_OBS), 0.01), np.full(N_OUT, 50.0)))
    return path


def gateway_config(tmp: Path, cell: Cell, address: dict[str, Any], args: argparse.Namespace) -> Path:
    """N limited measurements + e-stop input + outputs + heartbeat, laid out as simulators/scale.py serves them."""
    period_ms = 1000.0 / cell.hz
    lines = ["[gateway]", 'name = "bench"', f"cycle_hz = {cell.hz}", "auto_start = true",
             "max_consecutive_overruns = 1000000",  # count and report overruns, never trip on them
             "comms_timeout_ms = 2000", f"busy_wait_us = {args.busy_wait_us}",
             f'event_loop = "{args.event_loop}"', f'gc = "{args.gc}"', f'write_ack = "{args.write_ack}"',
             f'timing_trace = "{tmp / "trace.npy"}"',
             f"timing_trace_cycles = {int(cell.hz * (args.warmup + args.seconds + 30 + 2 * args.estop_trips)) + 1000}"]
    if args.daemon_cpu >= 0:
        lines.append(f"cpu_affinity = [{args.daemon_cpu}]")
    if args.realtime:
        lines.append(f"realtime_priority = {args.realtime}")
    tags: list[str] = []

    def tag(name: str, **kv: Any) -> None:
        tags.append(f"[tags.{name}]")
        tags.extend(f"{k} = {json.dumps(v)}" for k, v in kv.items())

    n = cell.tags
    if cell.protocol.startswith("opcua"):
        mode = "subscribe" if cell.protocol == "opcua-sub" else "poll"
        publish = args.publish_ms if args.publish_ms is not None else period_ms
        lines += ["[connections.plc]", 'type = "opcua"', f'url = "{address["opcua"]}"', f'mode = "{mode}"',
                  f"publish_interval_ms = {publish}", "timeout_s = 2.0"]
        for i in range(n):
            tag(f"m{i}", connection="plc", node=f"ns=2;s=scale.m{i}", units="u", range=[-3000.0, 3000.0])
        tag("estop", connection="plc", node="ns=2;s=scale.estop", datatype="bool")
        for j in range(N_OUT):
            tag(f"a{j}", connection="plc", node=f"ns=2;s=scale.a{j}", units="%", range=[0.0, 100.0], writable=True)
        tag("hb", connection="plc", node="ns=2;s=scale.hb", datatype="uint32", writable=True)
    else:
        shares = split(n, cell.devices)
        for d, port in enumerate(address["modbus"]):
            lines += [f"[connections.dev{d}]", 'type = "modbus"', 'host = "127.0.0.1"', f"port = {port}",
                      "timeout_s = 1.0"]
        i = 0
        for d, share in enumerate(shares):
            for off in range(share):
                tag(f"m{i}", connection=f"dev{d}", table="holding", address=off, datatype="int16", scale=0.1,
                    units="u", range=[-3000.0, 3000.0])
                i += 1
        base = shares[0]
        tag("estop", connection="dev0", table="holding", address=base, datatype="bool")
        for j in range(N_OUT):
            tag(f"a{j}", connection="dev0", table="holding", address=base + 1 + j, datatype="int16", scale=0.1,
                units="%", range=[0.0, 100.0], writable=True)
        tag("hb", connection="dev0", table="holding", address=base + 1 + N_OUT, datatype="uint16", writable=True)
    obs = [f"m{i}" for i in range(N_OBS)]
    acts = [f"a{j}" for j in range(N_OUT)]
    safety = ["[policy]", f'path = "{write_policy(tmp / "policy.onnx")}"', f"observations = {json.dumps(obs)}",
              f"actions = {json.dumps(acts)}", "[safety]", 'heartbeat_tag = "hb"', 'estop_input = "estop"']
    for i in range(n):
        safety += [f"[safety.limits.m{i}]", "hard = [-1000.0, 1000.0]", "soft = [-900.0, 900.0]"]
    for a in acts:
        safety += [f"[safety.actions.{a}]", "min = 0.0", "max = 100.0", "safe = 0.0"]
    rest = ["[audit]", f'dir = "{tmp / "audit"}"', "[metrics]", f"port = {args.metrics_port}", "[control]",
            f'socket = "{tmp / "control.sock"}"', "[logging]", 'level = "warning"', 'format = "json"']
    path = tmp / "gateway.toml"
    path.write_text("\n".join([*lines, *tags, *safety, *rest]) + "\n")
    return path


# ---- processes --------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def steal_ms() -> list[float]:
    """Per CPU, the time the hypervisor ran something else while this VM's CPU had work (ms, since boot)."""
    tick = 1000.0 / os.sysconf("SC_CLK_TCK")
    return [int(line.split()[8]) * tick for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("cpu") and line[3].isdigit()]


def thread_waits_ms(pid: int) -> dict[str, float]:
    """Per thread of ``pid`` ("main" or its tid), the time it was runnable but not running (ms, schedstat)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            name = "main" if task.name == str(pid) else task.name
            out[name] = int((task / "schedstat").read_text().split()[1]) / 1e6
    return out


def pinned(cpu: int, fifo: int = 0) -> Any:
    """preexec_fn: the child on ``cpu`` (if this machine has it), at SCHED_FIFO ``fifo`` (if > 0)."""
    def setup() -> None:
        if cpu >= 0 and cpu in os.sched_getaffinity(0):
            os.sched_setaffinity(0, {cpu})
        if fifo > 0:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(fifo))
    return setup


class TwinProcess:
    """simulators/scale.py as a child process, commanded over its stdin."""

    def __init__(self, cell: Cell, cpu: int, fifo: int = 0, freeze_gc: bool = True) -> None:
        self.cell, self.cpu, self.fifo, self.freeze_gc = cell, cpu, fifo, freeze_gc
        self.proc: asyncio.subprocess.Process | None = None
        self.address: dict[str, Any] = {}

    async def __aenter__(self) -> TwinProcess:
        proto = "modbus" if self.cell.protocol == "modbus" else "opcua"
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "simulators.scale", proto, "--tags", str(self.cell.tags),
            "--devices", str(self.cell.devices), "--outputs", str(N_OUT),
            "--freeze-gc" if self.freeze_gc else "--no-freeze-gc", cwd=str(ROOT),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, preexec_fn=pinned(self.cpu, self.fifo))
        self.address = await self.answer(120.0)
        return self

    async def answer(self, timeout: float = 10.0) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError("the load twin exited")
        return json.loads(line)

    def send(self, cmd: dict[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())

    async def __aexit__(self, *exc: object) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 15)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


def stats_us(x: np.ndarray) -> dict[str, float]:
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)] * 1e6
    if len(x) == 0:
        return {"n": 0, "median": float("nan"), "p99": float("nan"), "p999": float("nan"), "max": float("nan")}
    return {"n": int(len(x)), "median": float(np.median(x)), "p99": float(np.percentile(x, 99)),
            "p999": float(np.percentile(x, 99.9)), "max": float(x.max())}


async def scrape(port: int) -> dict[str, Any]:
    """Cycles, deadline misses, mode and reconnects from /metrics ({} while not answering).
    (The control socket's status lists every tag: too long a line for 512 tags and more.)"""
    import re
    import urllib.request

    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return resp.read().decode()

    try:
        text = await asyncio.to_thread(get)
    except OSError:
        return {}

    def value(pattern: str) -> float:
        m = re.search(rf"^{pattern} ([0-9.e+-]+)$", text, flags=re.M)
        return float(m.group(1)) if m else float("nan")

    modes = re.findall(r'^edgewarden_mode\{mode="(\w+)"\} 1\.0$', text, flags=re.M)
    return {"cycles": int(value("edgewarden_cycles_total")),
            "misses": int(value("edgewarden_deadline_misses_total")),
            "holds": int(value("edgewarden_hold_cycles_total")),
            "mode": modes[0] if modes else None,
            "reconnects": sum(float(x) for x in re.findall(r"^edgewarden_link_reconnects_total\{.*\} ([0-9.e+]+)$",
                                                             text, flags=re.M))}


async def run_daemon(cell: Cell, twin: TwinProcess, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    from tests.helpers import wait_for

    args.metrics_port = free_port()
    config = gateway_config(tmp, cell, twin.address, args)
    log = (tmp / "gateway.log").open("wb")
    env = {**os.environ, "EDGEWARDEN_LOGGING__FORMAT": "json"}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway.cli", "run", "--config",
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

    from gateway.ops.control import send_command
    from tests.helpers import wait_for

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


# ---- the bare libraries doing the same requests ---------------------------------------------------
async def bare(spec: dict[str, Any]) -> dict[str, Any]:
    """Child process: the read and write stages' requests with the library alone, paced like the cycle."""
    import logging

    import onnxruntime as ort

    from gateway.policy.onnx_policy import session_options

    logging.disable(logging.WARNING)
    cell = Cell.parse(spec["cell"])
    address, seconds = spec["address"], spec["seconds"]
    session = ort.InferenceSession(spec["policy"], session_options())
    obs = np.zeros((1, N_OBS), dtype=np.float32)
    outputs = [50.0] * N_OUT
    read, write, close = await _bare_io(cell, address, spec["publish_ms"])
    period = 1.0 / cell.hz
    n = int(seconds * cell.hz)
    t_read, t_write, t_infer = np.empty(n), np.empty(n), np.empty(n)
    clock = time.perf_counter
    for _ in range(int(cell.hz)):  # one second of warm-up
        await read()
        await write(outputs, 0)
    cpu0, deadline = time.process_time(), clock()
    try:
        for k in range(n):
            deadline += period
            delay = deadline - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            t0 = clock()
            values = await read()
            t1 = clock()
            obs[0] = values[:N_OBS]
            session.run(None, {"obs": obs})
            t2 = clock()
            await write(outputs, k)
            t3 = clock()
            t_read[k], t_infer[k], t_write[k] = t1 - t0, t2 - t1, t3 - t2
    finally:
        await close()
    return {"read": stats_us(t_read), "write": stats_us(t_write), "infer": stats_us(t_infer),
            "cpu": (time.process_time() - cpu0) / (n * period)}


async def _bare_io(cell: Cell, address: dict[str, Any], publish_ms: float) -> tuple[Any, Any, Any]:
    if cell.protocol.startswith("opcua"):
        from asyncua import Client, ua

        client = Client(url=address["opcua"], timeout=2.0)
        await client.connect()
        names = [*(f"m{i}" for i in range(cell.tags)), "estop", *(f"a{j}" for j in range(N_OUT))]
        ids = [ua.NodeId.from_string(f"ns=2;s=scale.{name}") for name in names]
        out_ids = [ua.NodeId.from_string(f"ns=2;s=scale.a{j}") for j in range(N_OUT)]
        out_ids.append(ua.NodeId.from_string("ns=2;s=scale.hb"))
        values = np.zeros(len(ids))

        async def write(outputs: list[float], k: int) -> None:
            dvs = [ua.DataValue(ua.Variant(v, ua.VariantType.Double)) for v in outputs]
            dvs.append(ua.DataValue(ua.Variant(k % 2**32, ua.VariantType.UInt32)))
            await client.uaclient.write_attributes(out_ids, dvs, ua.AttributeIds.Value)

        async def close() -> None:
            await client.disconnect()

        if cell.protocol == "opcua-poll":
            async def read() -> np.ndarray:
                dvs = await client.uaclient.read_attributes(ids, ua.AttributeIds.Value)
                values[:] = [float(dv.Value.Value) for dv in dvs]
                return values
        else:
            cache: list[Any] = [None] * len(ids)
            pos = {nid: i for i, nid in enumerate(ids)}

            class Handler:
                def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
                    cache[pos[node.nodeid]] = data.monitored_item.Value

            sub = await client.create_subscription(publish_ms, Handler())
            await sub.subscribe_data_change([client.get_node(i) for i in ids])
            for _ in range(500):  # every item's first notification
                if all(dv is not None for dv in cache):
                    break
                await asyncio.sleep(0.01)

            async def read() -> np.ndarray:
                values[:] = [float(dv.Value.Value) for dv in cache]
                return values
        return read, write, close

    from pymodbus.client import AsyncModbusTcpClient

    shares = split(cell.tags, cell.devices)
    clients = []
    for port in address["modbus"]:
        client = AsyncModbusTcpClient("127.0.0.1", port=port, reconnect_delay=0)
        await client.connect()
        clients.append(client)
    counts = [share + (1 + N_OUT if d == 0 else 0) for d, share in enumerate(shares)]
    blocks = [[(start, min(120, count - start)) for start in range(0, count, 120)] for count in counts]

    async def read_device(d: int) -> list[float]:
        regs: list[int] = []
        for start, count in blocks[d]:
            regs += (await clients[d].read_holding_registers(start, count=count, device_id=1)).registers
        return [v / 10.0 for v in struct.unpack(f">{len(regs)}h", struct.pack(f">{len(regs)}H", *regs))]

    async def read() -> np.ndarray:
        parts = await asyncio.gather(*(read_device(d) for d in range(len(clients))))
        return np.array([v for part in parts for v in part])

    async def write(outputs: list[float], k: int) -> None:
        regs = [int(round(v * 10.0)) & 0xFFFF for v in outputs] + [k % 65536]
        await clients[0].write_registers(shares[0] + 1, values=regs, device_id=1)

    async def close() -> None:
        for client in clients:
            client.close()

    return read, write, close


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


# ---- the gateway's transport and the bare library, one process, interleaved -------------------------
async def interleave(cell: Cell, args: argparse.Namespace) -> list[str]:
    """The read and write stages' calls, gateway transport and bare library alternating in
    this one process against one twin, each pair ``--interleave`` ms after the last (100 ms
    is what a 10 Hz cycle sleeps: caches cold), at a random phase of the twin's scan. What
    is left of a gateway/bare ratio here is code, not the process, the run or the phase."""
    import random

    from gateway.config import load_config
    from gateway.io.composite import CompositeTransport
    from gateway.io.tags import Snapshot, TagMap
    from gateway.io.transport import plan_writes
    from simulators.scale import SCAN_S

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
        bare_read, bare_write, bare_close = await _bare_io(cell, twin.address, 1000.0 / cell.hz)

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


# ---- in-process before/after figures of the cycle's optimisations ---------------------------------
def micro(repeat: int) -> list[str]:
    """Each fast path beside its reference (both in the code), same process, interleaved."""
    import random
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from asyncua import ua
    from asyncua.ua.ua_binary import struct_to_binary

    from gateway.config import ModbusConnection, OpcUaConnection, TagSpec
    from gateway.io.modbus.codec import encode, encode_reference
    from gateway.io.modbus.transport import ModbusTransport
    from gateway.io.opcua import codec
    from gateway.io.opcua.request import ReadRequest
    from gateway.io.opcua.transport import OpcUaTransport
    from gateway.io.tags import Snapshot, TagMap

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
        mspecs = {f"m{i}": TagSpec(connection="m", table="holding", address=i, datatype="int16", scale=0.1)
                  for i in range(n)}
        mt = ModbusTransport(tagmap(mspecs), {"m": ModbusConnection(type="modbus", host="h")})  # type: ignore[call-overload]
        rng = random.Random(n)
        blocks = [(b, SimpleNamespace(registers=[rng.randrange(65536) for _ in range(b.count)]))
                  for b in mt.blocks("m")]
        msnap = Snapshot(n)

        reference = [(dataclasses.replace(b, whole=None), rr) for b, rr in blocks]  # per tag: codec.decode

        def fill(pairs: list[Any]) -> None:
            for block, rr in pairs:
                ModbusTransport._fill(msnap, block, rr, 1.0, 2.0)  # noqa: B023

        rows.append(("Modbus snapshot fill: per tag -> one struct", ab(
            lambda: fill(reference), lambda: fill(blocks), k)))  # noqa: B023
        for name, (before, after) in rows:
            lines.append(f"{name:<44} {n:5d} {before:8.1f} {after:8.1f} {before / after:6.1f}")
    spec = TagSpec(connection="m", table="holding", address=0, datatype="int16", scale=0.1)
    before, after = ab(lambda: [encode_reference(spec, 512.0 + i) for i in range(3)],
                       lambda: [encode(spec, 512.0 + i) for i in range(3)], repeat * 10)
    lines.append(f"{'Modbus encode 3 int16 outputs: pymodbus -> int':<44} {3:5d} {before:8.1f} {after:8.1f} "
                 f"{before / after:6.1f}")
    return lines


async def _wait_compare(hz: float, seconds: float, busy_us: float) -> list[str]:
    """The cycle's waits, on this process's event loop: lateness against the grid and CPU."""
    from gateway.cycle import ControlLoop

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
        await ControlLoop._sleep_until(deadline, busy_s)

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


async def _floor(hz: float, seconds: float, busy_us: float, work_us: float) -> list[str]:
    """The physical floor of this machine for a cycle: a fixed piece of pure computation
    (``work_us`` long when undisturbed) run on the cycle's deadlines, on the cycle's CPU and
    priority, with no I/O, no other thread and nothing of ours in it. Any time it takes
    beyond its undisturbed length is the machine's (hypervisor steal, a slower core, the
    kernel), and a cycle whose work takes that long would miss its deadline too."""
    from gateway.cycle import ControlLoop

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
        await ControlLoop._sleep_until(deadline, busy_us / 1e6)
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


# ---- the matrix -----------------------------------------------------------------------------------
def cells_of(args: argparse.Namespace) -> list[Cell]:
    if args.cells:
        return [Cell.parse(c) for c in args.cells.split(",")]
    if not args.full:
        return [Cell.parse(c) for c in SHORT_CELLS.split(",")]
    return [Cell(proto, n, d, hz) for proto, d in FULL_PROTOCOLS for n in FULL_TAGS if d <= n
            for hz in FULL_RATES]


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


def process_settings(args: argparse.Namespace) -> Any:
    """This process on the daemon's CPU, event loop and priority (--micro/--floor/--interleave)."""
    from gateway.config import GatewaySection

    return GatewaySection(event_loop=args.event_loop, cpu_affinity=[] if args.daemon_cpu < 0 else
                          [args.daemon_cpu], realtime_priority=args.realtime or None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="the whole matrix (tags × protocols × rates)")
    ap.add_argument("--cells", default=None, help=f"comma-separated cells (default: {SHORT_CELLS})")
    ap.add_argument("--seconds", type=float, default=10.0, help="measured window per cell")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds in AUTO before the window")
    ap.add_argument("--bare-seconds", type=float, default=5.0, help="bare client run per cell (0: none)")
    ap.add_argument("--estop-trips", type=int, default=0, help="PLC e-stop trips per cell after the window")
    ap.add_argument("--busy-wait-us", type=float, default=1500.0, help="[gateway] busy_wait_us")
    ap.add_argument("--event-loop", choices=["asyncio", "uvloop"], default="asyncio")
    ap.add_argument("--gc", choices=["python", "between_cycles"], default="between_cycles", help="[gateway] gc")
    ap.add_argument("--write-ack", choices=["in_cycle", "next_cycle"], default="in_cycle",
                    help="[gateway] write_ack (next_cycle: the write stage is the send, not the round trip, "
                    "so its ratio to the bare round trip is not an overhead)")
    ap.add_argument("--realtime", type=int, default=0, help="[gateway] realtime_priority (0: none); the "
                    "bare client gets the same")
    ap.add_argument("--twin-realtime", type=int, default=0, help="SCHED_FIFO priority for the load twin "
                    "(0: none): a PLC is hardware of its own, not a process the gateway shares a CPU with")
    ap.add_argument("--publish-ms", type=float, default=None, help="subscription publishing interval "
                    "(default: the cycle period)")
    ap.add_argument("--twin-freeze-gc", action=argparse.BooleanOptionalAction, default=True,
                    help="the twin freezes its start-up heap (simulators/scale.py)")
    ap.add_argument("--twin-cpu", type=int, default=0, help="CPU for the load twin (-1: any)")
    ap.add_argument("--daemon-cpu", type=int, default=1, help="CPU for the daemon and the bare client (-1: any)")
    ap.add_argument("--skip-after-miss", action=argparse.BooleanOptionalAction, default=True,
                    help="skip a cell when fewer tags already missed deadlines at that protocol and rate")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--keep", type=Path, default=None, help="copy each cell's timing trace, daemon log and "
                    "config here (trace.npy: every cycle, columns gateway.timing.TRACE_FIELDS)")
    ap.add_argument("--micro", action="store_true", help="only the in-process before/after figures of the "
                    "I/O optimisations (no twin, no daemon)")
    ap.add_argument("--wait-compare", type=float, default=0.0, metavar="SECONDS",
                    help="only compare the ways of waiting for a deadline at --wait-hz for SECONDS each")
    ap.add_argument("--wait-hz", type=float, default=100.0)
    ap.add_argument("--floor", type=float, default=0.0, metavar="SECONDS", help="only the machine's floor: "
                    "--floor-us of pure computation per cycle at --wait-hz on the daemon's CPU and priority")
    ap.add_argument("--floor-us", type=float, default=1000.0)
    ap.add_argument("--interleave", type=float, default=0.0, metavar="MS", help="only the read and write "
                    "stages' calls, gateway transport and bare library alternating in one process, MS apart, "
                    "for each of --cells")
    ap.add_argument("--interleave-pairs", type=int, default=400)
    ap.add_argument("--bare", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.micro or args.wait_compare or args.floor:
        from gateway import timing

        print(f"# bench_cycle  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}  {machine()}")
        if args.micro:
            print("\n".join(micro(200)))
        gw = process_settings(args)
        if args.wait_compare or args.floor:
            timing.prepare_process(gw)
        if args.wait_compare:
            print(f"# {args.wait_hz:g} Hz, {args.wait_compare:g} s each, event_loop={args.event_loop}, "
                  f"realtime={args.realtime or 'no'}, CPU {args.daemon_cpu}")
            print("\n".join(timing.run(_wait_compare(args.wait_hz, args.wait_compare, args.busy_wait_us), gw)))
        if args.floor:
            print("\n".join(timing.run(_floor(args.wait_hz, args.floor, args.busy_wait_us, args.floor_us), gw)))
        return 0
    if args.bare is not None:
        from gateway import timing
        from gateway.config import GatewaySection

        res = timing.run(bare(json.loads(args.bare)), GatewaySection(event_loop=args.event_loop))
        print(json.dumps(res))
        return 0
    cells = cells_of(args)
    if args.interleave:
        from gateway import timing

        print(f"# bench_cycle --interleave  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}  {machine()}")
        print(f"# event_loop={args.event_loop}, realtime={args.realtime or 'no'} on CPU {args.daemon_cpu}, "
              f"twin CPU {args.twin_cpu} (FIFO {args.twin_realtime or 'no'})")
        gw = process_settings(args)
        timing.prepare_process(gw)
        for cell in cells:
            print("\n".join(timing.run(interleave(cell, args), gw)), flush=True)
        return 0
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
