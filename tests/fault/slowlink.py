"""A healthy link made slow: the CSTR twin behind the tests' latency proxy (half the round
trip each way), the real daemon behind it, some seconds in AUTO; what the gateway made of
it. ``python -m tests.fault.slowlink --protocol opcua --hz 10 --rtt-ms 50`` (the figures
in docs/io.md, *A slow link*); tests/fault/test_slow_link.py runs the 10 Hz cases."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from edgewarden.data import EXAMPLES, MODELS
from edgewarden.simulators.twin import Twin
from tests.fault.hostile import Daemon, _to_auto
from tests.fault.proxy import FaultProxy
from tests.helpers import wait_for, write_config


@contextlib.asynccontextmanager
async def slow_plant(protocol: str, hz: float, tmp: Path,
                     gateway: str = "") -> AsyncIterator[tuple[Daemon, FaultProxy]]:
    """The twin, the latency proxy in front of it (passing, until set) and the daemon behind
    it at ``hz`` (``gateway``: more lines for its [gateway] section), in AUTO; all stopped
    on the way out."""
    twin = Twin("cstr", opcua=("127.0.0.1", 0), modbus=("127.0.0.1", 0) if protocol == "modbus" else None)
    await twin.start()
    server = twin.modbus if protocol == "modbus" else twin.opcua
    assert server is not None
    proxy = FaultProxy(("127.0.0.1", int(server.port or 0)))
    await proxy.start()
    replace = {r"^cycle_hz = 10.0": f"cycle_hz = {hz:g}\n{gateway}"}
    if protocol == "modbus":
        config = write_config(tmp, policy=MODELS / "cstr_baseline.onnx", example=EXAMPLES / "cstr_modbus.toml",
                              modbus_port=proxy.port, replace=replace)
    else:
        config = write_config(tmp, policy=MODELS / "cstr_baseline.onnx", url=f"opc.tcp://127.0.0.1:{proxy.port}",
                              replace=replace)
    d = Daemon(config, tmp / "daemon.log")
    try:
        await d.start()

        async def ready() -> bool:
            return (await d.status()).get("mode") == "READY"

        await wait_for(ready, "READY", timeout=60)
        await _to_auto(d, twin)
        yield d, proxy
    finally:
        proxy.set("pass")
        await d.stop()
        await proxy.close()
        await twin.stop()


async def run(protocol: str, hz: float, rtt_ms: float, seconds: float, tmp: Path,
              write_ack: str = "in_cycle") -> dict[str, Any]:
    async with slow_plant(protocol, hz, tmp, f'write_ack = "{write_ack}"') as (d, proxy):
        proxy.set("delay", rtt_ms / 2000.0)
        first = await d.status()
        await asyncio.sleep(seconds)
        st = await d.status()
    a, b = first["stats"], st["stats"]
    link = next(iter(st["links"].values()))
    return {"protocol": protocol, "hz": hz, "write_ack": write_ack, "rtt_ms": rtt_ms, "mode": st["mode"],
            "trip": (st.get("last_trip") or {}).get("code") if st["trips"] > first["trips"] else None,
            "cycles": b["cycles"] - a["cycles"], "misses": b["deadline_misses"] - a["deadline_misses"],
            "write_errors": b["write_errors"] - a["write_errors"], "read_rtt_ms": 1000 * link["rtt_s"],
            "data_age_ms": None if st["data_age_s"] is None else 1000 * st["data_age_s"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocol", choices=("opcua", "modbus"), required=True)
    ap.add_argument("--hz", type=float, default=10.0)
    ap.add_argument("--rtt-ms", type=float, required=True)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--write-ack", choices=("in_cycle", "next_cycle"), default="in_cycle")
    args = ap.parse_args(argv)
    r = asyncio.run(run(args.protocol, args.hz, args.rtt_ms, args.seconds, Path(tempfile.mkdtemp(prefix="slowlink-")),
                        args.write_ack))
    print(" ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
