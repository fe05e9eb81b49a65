"""What the control-cycle benchmarks share: the cells, the generated gateway config and
policy, the load twin as its own pinned process, the bare client's I/O, process pinning
and the command-line options every cycle benchmark takes.

    bench_cycle.py             the daemon against a load twin, each stage beside the bare library
    bench_cycle_interleave.py  the read and write stages' calls, gateway and bare, in one process
    bench_cycle_paths.py       each fast path of the I/O beside its reference, in process
    bench_cycle_wait.py        the ways of waiting for a deadline, and the machine's floor
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _common import ROOT, summary_us

from edgewarden.simulators.scale import split

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
    from edgewarden.gateway.policy.contract import PolicyContract
    from edgewarden.training.onnx_graph import build_linear_policy, write_model

    contract = PolicyContract(
        observation_tags=tuple(f"m{i}" for i in range(N_OBS)), observation_units=("u",) * N_OBS,
        action_tags=tuple(f"a{j}" for j in range(N_OUT)), action_units=("%",) * N_OUT,
        action_low=(0.0,) * N_OUT, action_high=(100.0,) * N_OUT, algorithm="bench-linear",
        dataset_hash="none", training_config={}, input_name="obs", output_name="action")
    write_model(path, build_linear_policy(contract, np.full((N_OUT, N_OBS), 0.01), np.full(N_OUT, 50.0)))
    return path


def gateway_config(tmp: Path, cell: Cell, address: dict[str, Any], args: argparse.Namespace) -> Path:
    """N limited measurements + e-stop input + outputs + heartbeat, laid out as edgewarden/simulators/scale.py serves them."""
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
    """edgewarden/simulators/scale.py as a child process, commanded over its stdin."""

    def __init__(self, cell: Cell, cpu: int, fifo: int = 0, freeze_gc: bool = True) -> None:
        self.cell, self.cpu, self.fifo, self.freeze_gc = cell, cpu, fifo, freeze_gc
        self.proc: asyncio.subprocess.Process | None = None
        self.address: dict[str, Any] = {}

    async def __aenter__(self) -> TwinProcess:
        proto = "modbus" if self.cell.protocol == "modbus" else "opcua"
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edgewarden.simulators.scale", proto, "--tags", str(self.cell.tags),
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
    return summary_us(x, 1e6)


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


# ---- the bare libraries doing the same requests ---------------------------------------------------
async def bare(spec: dict[str, Any]) -> dict[str, Any]:
    """Child process: the read and write stages' requests with the library alone, paced like the cycle."""
    import logging

    import onnxruntime as ort

    from edgewarden.gateway.policy.onnx_policy import session_options

    logging.disable(logging.WARNING)
    cell = Cell.parse(spec["cell"])
    address, seconds = spec["address"], spec["seconds"]
    session = ort.InferenceSession(spec["policy"], session_options())
    obs = np.zeros((1, N_OBS), dtype=np.float32)
    outputs = [50.0] * N_OUT
    read, write, close = await bare_io(cell, address, spec["publish_ms"])
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


async def bare_io(cell: Cell, address: dict[str, Any], publish_ms: float) -> tuple[Any, Any, Any]:
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


# ---- the matrix -----------------------------------------------------------------------------------
def cells_of(args: argparse.Namespace) -> list[Cell]:
    if args.cells:
        return [Cell.parse(c) for c in args.cells.split(",")]
    if not args.full:
        return [Cell.parse(c) for c in SHORT_CELLS.split(",")]
    return [Cell(proto, n, d, hz) for proto, d in FULL_PROTOCOLS for n in FULL_TAGS if d <= n
            for hz in FULL_RATES]


def process_settings(args: argparse.Namespace) -> Any:
    """This process on the daemon's CPU, event loop and priority."""
    from edgewarden.gateway.config import GatewaySection

    return GatewaySection(event_loop=args.event_loop, cpu_affinity=[] if args.daemon_cpu < 0 else
                          [args.daemon_cpu], realtime_priority=args.realtime or None)

def add_process_options(ap: argparse.ArgumentParser) -> None:
    """The daemon's (and this process's) CPU, priority, event loop and wait."""
    ap.add_argument("--busy-wait-us", type=float, default=1500.0, help="[gateway] busy_wait_us")
    ap.add_argument("--event-loop", choices=["asyncio", "uvloop"], default="asyncio")
    ap.add_argument("--realtime", type=int, default=0, help="[gateway] realtime_priority (0: none); the "
                    "bare client gets the same")
    ap.add_argument("--daemon-cpu", type=int, default=1, help="CPU for the daemon and the bare client (-1: any)")


def add_cell_options(ap: argparse.ArgumentParser) -> None:
    """Which cells, and how the daemon and the load twin run them."""
    add_process_options(ap)
    ap.add_argument("--full", action="store_true", help="the whole matrix (tags × protocols × rates)")
    ap.add_argument("--cells", default=None, help=f"comma-separated cells (default: {SHORT_CELLS})")
    ap.add_argument("--seconds", type=float, default=10.0, help="measured window per cell")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds in AUTO before the window")
    ap.add_argument("--estop-trips", type=int, default=0, help="PLC e-stop trips per cell after the window")
    ap.add_argument("--gc", choices=["python", "between_cycles"], default="between_cycles", help="[gateway] gc")
    ap.add_argument("--write-ack", choices=["in_cycle", "next_cycle"], default="in_cycle",
                    help="[gateway] write_ack (next_cycle: the write stage is the send, not the round trip, "
                    "so its ratio to the bare round trip is not an overhead)")
    ap.add_argument("--twin-realtime", type=int, default=0, help="SCHED_FIFO priority for the load twin "
                    "(0: none): a PLC is hardware of its own, not a process the gateway shares a CPU with")
    ap.add_argument("--publish-ms", type=float, default=None, help="subscription publishing interval "
                    "(default: the cycle period)")
    ap.add_argument("--twin-freeze-gc", action=argparse.BooleanOptionalAction, default=True,
                    help="the twin freezes its start-up heap (edgewarden/simulators/scale.py)")
    ap.add_argument("--twin-cpu", type=int, default=0, help="CPU for the load twin (-1: any)")
