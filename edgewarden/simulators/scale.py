"""Load twin for the cycle benchmark: N tags on a real asyncua server, or on D real
pymodbus servers (one TCP port per device), with a PLC e-stop input and write-back
outputs whose arrival is timed here.

    python -m edgewarden.simulators.scale opcua --tags 64
    python -m edgewarden.simulators.scale modbus --tags 512 --devices 4

It prints one JSON line with its address(es), then follows JSON-line commands on stdin
(EOF stops it):

    {"cmd": "estop", "on": true}   set the e-stop input; the next write that puts every
                                   output at its safe value (0.0) answers
                                   {"estop_us": trigger → that write, µs}
    {"cmd": "estop", "on": false}  clear it
    {"cmd": "writes"}              {"writes": output writes so far, "outputs": last values}
    {"cmd": "gc"}                  {"gc_collections": per generation, "gc_max_ms", "gc_total_ms"}
                                   since the last such command

A PLC does not stop to collect garbage; this twin does, and a full collection of an
asyncua server's heap (its whole address space) takes tens of milliseconds, which the
gateway would see as a slow read. So after start-up the heap is frozen (``gc.freeze``:
never walked again; ``--no-freeze-gc`` keeps CPython's default) and every collection is
timed (``gc`` above), so a benchmark can tell the twin's pauses from the gateway's.

Layout (benchmarks/bench_cycle.py generates the matching gateway config):

* OPC UA: ``ns=2;s=scale.m{i}`` Double measurements (i < N), ``scale.estop`` Boolean,
  ``scale.a{j}`` writable Double outputs (j < ``--outputs``), ``scale.hb`` writable UInt32.
* Modbus: holding registers, one int16 per tag, unit id 1 on every port. Device d holds
  its share of the measurements from address 0; device 0 then has the e-stop input, the
  outputs and the heartbeat right after its measurements (one read block, one write).

Every 9.7 ms (``SCAN_S``) a rotating slice of up to 64 measurements changes (a slow sine plus the
scan count), so subscriptions carry traffic and values move. Measurements stay within
±100 of their base value (the generated limits are ±1000).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import math
import sys
import time
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.server import ModbusTcpServer

from edgewarden.gateway.timing import GcPauses

# Not 10 ms: a scan period that divides the cycle's (100 or 10 ms) would meet each cycle at
# the same phase for a whole run, a phase that differs between the gateway's run and the
# bare client's, and the twin's scan work would add to one side's round trips and not the
# other's. At 9.7 ms every run sweeps all phases (docs/performance.md, Control cycle).
SCAN_S = 0.0097
CHANGES_PER_SCAN = 64


def split(n: int, devices: int) -> list[int]:
    """How many of n measurements each device holds (the first ones take the remainder)."""
    base, extra = divmod(n, devices)
    return [base + (1 if d < extra else 0) for d in range(devices)]


def measurement(i: int, scan: int) -> float:
    return 10.0 * (i % 50) + 50.0 * math.sin(0.01 * scan + i)


class _Outputs:
    """The output tags as the twin last received them, and the e-stop timing."""

    def __init__(self, n: int) -> None:
        self.values = [math.nan] * n
        self.writes = 0
        self.armed_ns = 0
        self.answer: Any = print

    def written(self) -> None:
        self.writes += 1
        if self.armed_ns and all(v == 0.0 for v in self.values):
            dt = (time.perf_counter_ns() - self.armed_ns) / 1000.0
            self.armed_ns = 0
            self.answer({"estop_us": dt})


# ---- Modbus ---------------------------------------------------------------------------------
class _Registers(ModbusServerContext):
    """One device's holding registers as a plain list (unit id 1)."""

    def __init__(self, size: int, outputs: _Outputs | None, out_addr: int) -> None:  # no super(): deprecated blocks
        self.simdevices = []
        self.old_simulator = True  # pymodbus routes requests to async_get/setValues
        self.regs = [0] * size
        self.outputs = outputs
        self.out_addr = out_addr

    def device_ids(self) -> list[int]:
        return [1]

    async def async_getValues(self, device_id: int, func_code: int, address: int,
                              count: int = 1) -> list[int] | ExcCodes:
        if func_code != 3 or address + count > len(self.regs):
            return ExcCodes.ILLEGAL_ADDRESS
        return self.regs[address:address + count]

    async def async_setValues(self, device_id: int, func_code: int, address: int,
                              values: list[int] | list[bool]) -> ExcCodes | None:
        if func_code not in (6, 16) or address + len(values) > len(self.regs):
            return ExcCodes.ILLEGAL_ADDRESS
        self.regs[address:address + len(values)] = [int(v) for v in values]
        out = self.outputs
        if out is not None and address <= self.out_addr < address + len(values):
            n = len(out.values)
            raw = self.regs[self.out_addr:self.out_addr + n]
            out.values[:] = [float(r - 65536 if r >= 32768 else r) / 10.0 for r in raw]
            out.written()
        return None


class _Served:
    """A started load twin: ``scan(k)`` moves a slice of measurements, ``estop(on)``."""

    def __init__(self, address: dict[str, Any], outputs: _Outputs, scan: Any, estop: Any, close: Any) -> None:
        self.address, self.outputs, self.scan, self.estop, self.close = address, outputs, scan, estop, close


async def start_modbus(n: int, devices: int, n_out: int) -> _Served:
    outputs = _Outputs(n_out)
    shares = split(n, devices)
    contexts = []
    for d, share in enumerate(shares):
        # device 0: measurements, e-stop, outputs, heartbeat
        size = share + (n_out + 2 if d == 0 else 0)
        contexts.append(_Registers(max(size, 1), outputs if d == 0 else None, share + 1))
    servers = []
    for ctx in contexts:
        server = ModbusTcpServer(ctx, address=("127.0.0.1", 0))
        await server.serve_forever(background=True)
        servers.append(server)
    ports = [int(s.transport.sockets[0].getsockname()[1]) for s in servers]  # type: ignore[union-attr]
    estop_addr = shares[0]

    async def scan(k: int) -> None:
        start = (k * CHANGES_PER_SCAN) % max(n, 1)
        for i in range(start, min(start + CHANGES_PER_SCAN, n)):
            d, off = _locate(shares, i)
            contexts[d].regs[off] = int(round(measurement(i, k) * 10.0)) & 0xFFFF

    async def estop(on: bool) -> None:
        if on:
            outputs.armed_ns = time.perf_counter_ns()
        contexts[0].regs[estop_addr] = 1 if on else 0

    async def close() -> None:
        for server in servers:
            await server.shutdown()

    return _Served({"modbus": ports}, outputs, scan, estop, close)


def _locate(shares: list[int], i: int) -> tuple[int, int]:
    for d, share in enumerate(shares):
        if i < share:
            return d, i
        i -= share
    raise IndexError(i)


# ---- OPC UA ---------------------------------------------------------------------------------
async def start_opcua(n: int, n_out: int) -> _Served:
    from asyncua import Server, ua
    from asyncua.server.address_space import NodeData

    for name in ("asyncua", "asyncua.server", "asyncua.server.address_space"):
        logging.getLogger(name).setLevel(logging.ERROR)
    server = Server()
    await server.init()
    server.set_endpoint("opc.tcp://127.0.0.1:0")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace("urn:edgewarden:scale")
    obj = await server.nodes.objects.add_object(ua.NodeId("scale", ns), f"{ns}:scale")
    meas = []
    for i in range(n):
        node = await obj.add_variable(ua.NodeId(f"scale.m{i}", ns), f"{ns}:m{i}",
                                      ua.Variant(measurement(i, 0), ua.VariantType.Double))
        meas.append(node.nodeid)
    estop_node = await obj.add_variable(ua.NodeId("scale.estop", ns), f"{ns}:estop",
                                        ua.Variant(False, ua.VariantType.Boolean))
    outputs = _Outputs(n_out)
    for j in range(n_out):
        node = await obj.add_variable(ua.NodeId(f"scale.a{j}", ns), f"{ns}:a{j}",
                                      ua.Variant(0.0, ua.VariantType.Double))
        await node.set_writable(True)

        def setter(data: NodeData, attr: ua.AttributeIds, dv: ua.DataValue, j: int = j) -> None:
            data.attributes[attr].value = dv
            outputs.values[j] = float(dv.Value.Value)
            if j == n_out - 1:  # one Write request carries every output, in order
                outputs.written()

        server.set_attribute_value_setter(node.nodeid, setter)
    hb = await obj.add_variable(ua.NodeId("scale.hb", ns), f"{ns}:hb", ua.Variant(0, ua.VariantType.UInt32))
    await hb.set_writable(True)
    await server.start()
    from edgewarden.simulators.opcua_server import _bound_port

    from datetime import UTC, datetime

    stamp, utc = datetime.now, UTC

    async def scan(k: int) -> None:
        start = (k * CHANGES_PER_SCAN) % max(n, 1)
        for i in range(start, min(start + CHANGES_PER_SCAN, n)):
            dv = ua.DataValue(ua.Variant(measurement(i, k), ua.VariantType.Double), SourceTimestamp=stamp(utc))
            await server.write_attribute_value(meas[i], dv)

    async def estop(on: bool) -> None:
        if on:
            outputs.armed_ns = time.perf_counter_ns()
        await server.write_attribute_value(estop_node.nodeid, ua.DataValue(ua.Variant(on, ua.VariantType.Boolean)))

    return _Served({"opcua": f"opc.tcp://127.0.0.1:{_bound_port(server)}"}, outputs, scan, estop, server.stop)


# ---- common ---------------------------------------------------------------------------------
async def _scan_forever(twin: _Served) -> None:
    """Scan every SCAN_S on absolute deadlines (a late scan is skipped, not caught up)."""
    clock = time.perf_counter
    k = 0
    deadline = clock()
    while True:
        await twin.scan(k)
        k += 1
        deadline += SCAN_S
        now = clock()
        if now > deadline:
            deadline = now
        await asyncio.sleep(deadline - now)


async def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("protocol", choices=["opcua", "modbus"])
    ap.add_argument("--tags", type=int, required=True, help="measurements")
    ap.add_argument("--devices", type=int, default=1, help="Modbus devices (one port each)")
    ap.add_argument("--outputs", type=int, default=2)
    ap.add_argument("--freeze-gc", action=argparse.BooleanOptionalAction, default=True,
                    help="freeze the start-up heap (see the module's docstring)")
    args = ap.parse_args(argv)
    gc_stats = GcPauses()
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    if args.protocol == "opcua":
        twin = await start_opcua(args.tags, args.outputs)
    else:
        twin = await start_modbus(args.tags, args.devices, args.outputs)
    twin.outputs.answer = lambda msg: print(json.dumps(msg), flush=True)
    if args.freeze_gc:
        gc.collect()
        gc.freeze()
    gc_stats.report()
    print(json.dumps(twin.address), flush=True)
    scanner = asyncio.create_task(_scan_forever(twin))
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            cmd = json.loads(line)
            if cmd.get("cmd") == "estop":
                await twin.estop(bool(cmd.get("on")))
            elif cmd.get("cmd") == "gc":
                print(json.dumps(gc_stats.report()), flush=True)
            elif cmd.get("cmd") == "writes":
                print(json.dumps({"writes": twin.outputs.writes, "outputs": twin.outputs.values}), flush=True)
    finally:
        scanner.cancel()
        await asyncio.gather(scanner, return_exceptions=True)
        await twin.close()


if __name__ == "__main__":
    asyncio.run(main())
