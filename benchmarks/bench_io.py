"""Plant I/O: the gateway's transports vs the bare libraries doing the same, same run.

Goal (issue 4): the gateway's overhead is at most 1.2x the bare library, for
  * a snapshot read of 32 OPC UA tags (Double) in one Read request,
  * a snapshot read of 64 Modbus input registers (32 float32 tags, one block),
  * the write path: 4 OPC UA tags in one Write, 4 float32 tags (8 holding registers)
    in one Write Multiple Registers.

The bare side is what a user of the library would write for the same result:
asyncua's ``uaclient.read_attributes``/``write_attributes`` on the same NodeIds (the
cheapest public batched call; the gateway uses it too), and pymodbus'
``read_input_registers`` + ``convert_from_registers`` per float32 /
``convert_to_registers`` + ``write_registers``. The gateway also converts to engineering
units, sets quality and timestamps into the snapshot arrays, and range-checks writes.

The servers run in a child process (asyncua server and a pymodbus server on loopback),
so their CPU does not share the benchmark's event loop. Gateway and bare calls are
interleaved, so both see the same noise.

    .venv/bin/python benchmarks/bench_io.py [--iterations 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import numpy as np
from _common import ROOT, machine, summary_us

N_UA, N_UA_WRITE, N_REGS, N_MB_WRITE = 32, 4, 64, 4


async def serve() -> None:
    """Child process: an OPC UA server with 32 Double variables and a Modbus server."""
    import logging

    from asyncua import Server, ua

    from edgewarden.simulators.peers import ModbusServer, free_port

    logging.disable(logging.WARNING)
    port = free_port()
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    idx = await server.register_namespace("urn:bench")
    obj = await server.nodes.objects.add_object(ua.NodeId("bench", idx), "bench")
    for i in range(N_UA):
        node = await obj.add_variable(ua.NodeId(f"bench.v{i}", idx), f"v{i}", ua.Variant(float(i), ua.VariantType.Double))
        await node.set_writable()
    await server.start()
    mb = ModbusServer()
    await mb.start()
    import struct

    regs = []
    for i in range(N_REGS // 2):
        regs += list(struct.unpack(">HH", struct.pack(">f", 300.0 + i)))
    mb.set_regs("input", 0, regs)
    print(json.dumps({"opcua": f"opc.tcp://127.0.0.1:{port}", "modbus": mb.port}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await mb.stop()
    await server.stop()


def stats(ns: np.ndarray) -> dict[str, float]:
    return summary_us(ns, 1e-3)


async def interleave(n: int, gw: Callable[[], Awaitable[object]],
                     bare: Callable[[], Awaitable[object]]) -> dict[str, dict[str, float]]:
    for _ in range(50):  # warm up
        await gw()
        await bare()
    a = np.empty(n, dtype=np.int64)
    b = np.empty(n, dtype=np.int64)
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for i in range(n):
            t0 = clock()
            await gw()
            t1 = clock()
            await bare()
            t2 = clock()
            a[i], b[i] = t1 - t0, t2 - t1
    finally:
        gc.enable()
    return {"gateway": stats(a), "bare": stats(b)}


async def bench(urls: dict[str, object], n: int) -> dict[str, dict[str, dict[str, float]]]:
    from asyncua import Client, ua
    from pymodbus.client import AsyncModbusTcpClient

    from edgewarden.gateway.config import ModbusConnection, OpcUaConnection, TagSpec
    from edgewarden.gateway.io.modbus.transport import ModbusTransport
    from edgewarden.gateway.io.opcua.transport import OpcUaTransport
    from edgewarden.gateway.io.tags import Snapshot, TagMap
    from edgewarden.gateway.io.transport import plan_writes

    def tagmap(specs: dict[str, TagSpec]) -> TagMap:
        return TagMap(specs=specs, readable=tuple(specs), index={k: i for i, k in enumerate(specs)})

    out = {}
    # ---- OPC UA ------------------------------------------------------------------
    ua_specs = {f"v{i}": TagSpec(connection="u", node=f"ns=2;s=bench.v{i}", writable=i < N_UA_WRITE,
                                 range=(0.0, 1000.0), units="K") for i in range(N_UA)}
    ua_tags = tagmap(ua_specs)
    gw = OpcUaTransport(ua_tags, {"u": OpcUaConnection(url=str(urls["opcua"]))})
    await gw.connect()
    bare = Client(url=str(urls["opcua"]))
    await bare.connect()
    ids = [ua.NodeId.from_string(f"ns=2;s=bench.v{i}") for i in range(N_UA)]
    snap = Snapshot(N_UA)

    async def bare_read() -> object:
        return await bare.uaclient.read_attributes(ids, ua.AttributeIds.Value)

    out["opcua read 32 tags"] = await interleave(n, lambda: gw.read(snap), bare_read)
    plan = plan_writes(ua_specs, [f"v{i}" for i in range(N_UA_WRITE)])
    vals = [1.0, 2.0, 3.0, 4.0]
    wids = ids[:N_UA_WRITE]

    async def bare_write() -> object:
        dvs = [ua.DataValue(ua.Variant(v, ua.VariantType.Double)) for v in vals]
        return await bare.uaclient.write_attributes(wids, dvs, ua.AttributeIds.Value)

    out["opcua write 4 tags"] = await interleave(n, lambda: gw.write(plan, vals), bare_write)
    await gw.close()
    await bare.disconnect()

    # ---- Modbus ------------------------------------------------------------------
    mb_specs = {f"r{i}": TagSpec(connection="m", table="input", address=2 * i, datatype="float32", units="K")
                for i in range(N_REGS // 2)}
    mb_specs.update({f"w{i}": TagSpec(connection="m", table="holding", address=2 * i, datatype="float32",
                                      writable=True, range=(0.0, 1000.0)) for i in range(N_MB_WRITE)})
    readable = {k: v for k, v in mb_specs.items() if k.startswith("r")}
    mtags = TagMap(specs=mb_specs, readable=tuple(readable), index={k: i for i, k in enumerate(readable)})
    conn = ModbusConnection(type="modbus", host="127.0.0.1", port=int(urls["modbus"]))  # type: ignore[call-overload]
    mgw = ModbusTransport(mtags, {"m": conn})
    await mgw.connect()
    assert len(mgw.blocks("m")) == 1
    mbare = AsyncModbusTcpClient("127.0.0.1", port=int(urls["modbus"]), reconnect_delay=0)
    await mbare.connect()
    f32 = mbare.DATATYPE.FLOAT32
    msnap = Snapshot(len(readable))

    async def mb_bare_read() -> object:
        rr = await mbare.read_input_registers(0, count=N_REGS, device_id=1)
        regs = rr.registers
        return [mbare.convert_from_registers(regs[i:i + 2], f32) for i in range(0, N_REGS, 2)]

    out["modbus read 64 registers"] = await interleave(n, lambda: mgw.read(msnap), mb_bare_read)
    wplan = plan_writes(mb_specs, [f"w{i}" for i in range(N_MB_WRITE)])

    async def mb_bare_write() -> object:
        regs: list[int] = []
        for v in vals:
            regs += mbare.convert_to_registers(v, f32)
        return await mbare.write_registers(0, values=regs, device_id=1)

    out["modbus write 8 registers"] = await interleave(n, lambda: mgw.write(wplan, vals), mb_bare_write)
    await mgw.close()
    mbare.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(serve())
        return
    child = subprocess.Popen([sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, cwd=ROOT)
    try:
        assert child.stdout is not None
        urls = json.loads(child.stdout.readline())
        results = asyncio.run(bench(urls, args.iterations))
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(timeout=10)
    print(f"# bench_io  {time.strftime('%Y-%m-%d')}  {machine()}  n={args.iterations}")
    print(f"{'operation':28s} {'gateway med':>12s} {'p99':>8s} {'bare med':>10s} {'p99':>8s} {'ratio':>6s}")
    for name, r in results.items():
        g, b = r["gateway"], r["bare"]
        print(f"{name:28s} {g['median']:10.0f}us {g['p99']:6.0f}us {b['median']:8.0f}us {b['p99']:6.0f}us "
              f"{g['median'] / b['median']:6.2f}")


if __name__ == "__main__":
    main()
