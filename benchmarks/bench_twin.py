"""Simulated seconds per wall second for each twin plant, in-process and served.

    python benchmarks/bench_twin.py [--seconds 3] [--plants cstr,tanks,hvac]

In-process:
  * ``model``: ``PlantModel.step`` at the plant's control period (nominal action), the
    raw RK4 integration;
  * ``gym``: ``TwinEnv.step`` (model + observation + reward), skipped without gymnasium.
Served: a full ``Twin`` (PLC scan every 10 ms, OPC UA and Modbus servers) with
``time_scale`` = ``--scale`` (default: half the in-process model rate), while one
asyncua client reads every measurement and one pymodbus client reads the input registers, each in a loop; reports the simulated time the
plant advanced per wall second, the scans per second, the PLC overruns and the clients'
reads per second. The served figure is bounded by ``scale`` (the scan integrates the
elapsed wall time x scale); it only falls short of it when scans overrun.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import date

import numpy as np
from _common import machine


def bench_model(plant: str, seconds: float) -> float:
    from edgewarden.simulators.plants import make_plant

    p = make_plant(plant)
    dt = type(p).control_period_s
    u = p.spec.nominal_action
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(100):
            p.step(dt, u)
        n += 100
    return n * dt / (time.perf_counter() - t0)


def bench_gym(plant: str, seconds: float) -> float | None:
    try:
        from edgewarden.simulators.gym_env import make_env
    except ImportError:
        return None
    env = make_env(plant, seed=0, terminate_on_hard=False)
    u = env.unwrapped.spec_plant.nominal_action.astype(np.float32)
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(100):
            _, _, _, truncated, _ = env.step(u)
            if truncated:
                env.reset()
        n += 100
    return n * env.dt_s / (time.perf_counter() - t0)


async def bench_served(plant: str, seconds: float, scale: float) -> dict[str, float]:
    from asyncua import Client
    from pymodbus.client import AsyncModbusTcpClient

    from edgewarden.simulators.twin import Twin

    twin = Twin(plant, scan_ms=10, time_scale=scale)
    await twin.start()
    stop = asyncio.Event()
    reads = {"opcua": 0, "modbus": 0}
    names = twin.plant.spec.observation_names()
    try:
        async def opcua_reader() -> None:
            async with Client(twin.opcua_url, timeout=5) as client:
                nodes = [client.get_node(f"ns=2;s={plant}.{n}") for n in names]
                while not stop.is_set():
                    await client.read_values(nodes)
                    reads["opcua"] += 1

        async def modbus_reader() -> None:
            mb = AsyncModbusTcpClient("127.0.0.1", port=twin.modbus_port)
            await mb.connect()
            try:
                while not stop.is_set():
                    await mb.read_input_registers(0, count=2 * len(names), device_id=1)
                    reads["modbus"] += 1
            finally:
                mb.close()

        tasks = [asyncio.create_task(opcua_reader()), asyncio.create_task(modbus_reader())]
        await asyncio.sleep(0.5)  # connect, warm up
        sim0, scans0, over0, wall0 = twin.plant.time_s, twin.plc.scans, twin.overruns, \
            time.perf_counter()
        r0 = dict(reads)
        await asyncio.sleep(seconds)
        wall = time.perf_counter() - wall0
        result = {"sim_per_wall": (twin.plant.time_s - sim0) / wall,
                  "scans_per_s": (twin.plc.scans - scans0) / wall,
                  "overruns": float(twin.overruns - over0),
                  "opcua_reads_per_s": (reads["opcua"] - r0["opcua"]) / wall,
                  "modbus_reads_per_s": (reads["modbus"] - r0["modbus"]) / wall}
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        await twin.stop()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--plants", default="cstr,tanks,hvac")
    ap.add_argument("--scale", type=float, default=0.0,
                    help="served time_scale (default: half the in-process model rate)")
    args = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.ERROR)
    print(f"# {date.today()} {machine()}")
    print("| plant | model sim-s/wall-s | gym sim-s/wall-s | served sim-s/wall-s (scale) | "
          "scans/s | overruns | OPC UA reads/s | Modbus reads/s |")
    print("|---|---|---|---|---|---|---|---|")
    for plant in args.plants.split(","):
        model = bench_model(plant, args.seconds)
        gym = bench_gym(plant, args.seconds)
        scale = args.scale or float(f"{model / 2:.1g}")
        served = asyncio.run(bench_served(plant, args.seconds, scale))
        gym_text = f"{gym:,.0f}" if gym is not None else "n/a"
        print(f"| {plant} | {model:,.0f} | {gym_text} | {served['sim_per_wall']:,.0f} "
              f"({scale:g}) | {served['scans_per_s']:.1f} | {served['overruns']:.0f} | "
              f"{served['opcua_reads_per_s']:.0f} | {served['modbus_reads_per_s']:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
