"""The first closed loop, every part real: CSTR twin (asyncua + pymodbus servers, PLC scan,
heartbeat watchdog) in this process, the gateway daemon as a subprocess, as systemd runs it."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgewarden.data import MODELS
from edgewarden.gateway.audit.verify import iter_records, verify
from edgewarden.gateway.ops.control import send_command
from edgewarden.simulators.twin import Twin
from tests.helpers import control_status, wait_for, write_config

SHIPPED = MODELS / "cstr_baseline.onnx"
SAFE = {"coolant_flow_sp": 200.0, "feed_flow_sp": 0.0}


status = control_status


async def run_daemon(config: Path, log: Path) -> asyncio.subprocess.Process:
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edgewarden.gateway.cli", "run", "--config", str(config), stdout=out, stderr=out)


async def closed_loop(tmp: Path) -> None:
    async with Twin("cstr", opcua=("127.0.0.1", 0), modbus=("127.0.0.1", 0), watchdog_ms=500) as twin:
        image = twin.image
        assert not image["remote"]  # no gateway yet: the PLC holds its local safe state
        config = write_config(tmp, policy=SHIPPED, url=twin.opcua_url,
                              replace={r"^cycle_hz = 10.0": "cycle_hz = 20.0"})
        sock = tmp / "control.sock"
        proc = await run_daemon(config, tmp / "gateway.log")
        try:
            async def ready() -> bool:
                return (await status(sock)).get("mode") == "READY"
            await wait_for(ready, "the gateway to reach READY")
            # heartbeat alone takes the PLC to REMOTE; nothing but the heartbeat is written yet
            await wait_for(lambda: _true(image["remote"]), "the heartbeat to put the PLC in REMOTE")
            assert image["coolant_flow_sp"] == SAFE["coolant_flow_sp"]

            reply = await send_command(sock, {"cmd": "start", "actor": "test-operator"})
            assert reply["ok"] and reply["mode"] == "AUTO", reply

            # the policy's (shielded) actions reach the twin and are applied by the PLC
            async def applied() -> dict[str, Any] | None:
                st = await status(sock)
                a = st.get("action", {})
                if a and a["feed_flow_sp"] == 100.0 and image["feed_flow_sp"] == 100.0 \
                        and image["feed_flow"] == 100.0:
                    return st
                return None
            st = await wait_for(applied, "policy actions to reach the twin")
            assert st["mode"] == "AUTO" and image["remote"]
            assert 0.0 <= image["coolant_flow_sp"] <= 200.0

            # over-temperature: the reactor jumps above the 400 K hard limit
            x = twin.plant.state.copy()
            x[1] = 405.0
            twin.plant.state = x

            async def tripped() -> dict[str, Any] | None:
                st = await status(sock)
                return st if st.get("mode") == "ESTOP" else None
            st = await wait_for(tripped, "the e-stop to trip", timeout=5.0)
            assert st["last_trip"]["code"] == "hard_limit:T:high"
            await wait_for(lambda: _true(image["coolant_flow"] == 200.0 and image["feed_flow"] == 0.0),
                           "the safe outputs to arrive at the twin", timeout=2.0)
            assert image["coolant_flow_sp"] == 200.0 and image["feed_flow_sp"] == 0.0

            # Prometheus metrics on the configured (here: any free) port: figures rendered
            # between two cycles (a mode change at once, the rest at most every 0.5 s)
            async def scraped() -> str:
                text = await asyncio.to_thread(_scrape, st["metrics_port"])
                return text if 'edgewarden_mode{mode="ESTOP"} 1.0' in text else ""
            metrics = await wait_for(scraped, "the e-stop in the scraped figures", timeout=5.0)
            assert 'edgewarden_trips_total{reason="hard_limit"} 1.0' in metrics
            assert "edgewarden_cycle_seconds_bucket" in metrics

            # a reset is refused while the reactor is still too hot, and never restarts by itself
            reply = await send_command(sock, {"cmd": "reset", "actor": "test-operator",
                                                "reason": "the high temperature has cleared"})
            assert not reply["ok"] and "still present" in reply["error"]
        finally:
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 15)
        assert code == 0, (tmp / "gateway.log").read_text()

        # the daemon is gone: the PLC's dead-man timer drops REMOTE and applies its safe outputs
        await wait_for(lambda: _true(not image["remote"] and image["watchdog_tripped"]),
                       "the PLC watchdog to drop REMOTE", timeout=3.0)
        assert np.allclose([image["coolant_flow"], image["feed_flow"]], [200.0, 0.0])

    result = verify(tmp / "audit")
    assert result.ok, result.error
    records = list(iter_records(tmp / "audit"))
    kinds = [r.payload["kind"] for r in records]
    assert kinds[:2] == ["config_load", "model_load"]
    loaded = records[0].payload  # what an HDF5 export names its columns and units by
    assert loaded["obs_units"][0] == "K" and len(loaded["act_units"]) == len(loaded["act_tags"])
    assert "trip" in kinds and kinds.count("cycle") > 20 and kinds[-1] == "shutdown"


def _scrape(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


async def _true(value: object) -> bool:
    return bool(value)


@pytest.mark.anyio
async def test_closed_loop_twin_gateway_twin(tmp_path: Path) -> None:
    await closed_loop(tmp_path)


def test_unreachable_plc_is_a_clear_error(tmp_path: Path) -> None:
    import socket
    import subprocess

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = write_config(tmp_path, policy=SHIPPED, url=f"opc.tcp://127.0.0.1:{port}")
    proc = subprocess.run([sys.executable, "-m", "edgewarden.gateway.cli", "run", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 69
    assert "cannot reach PLC connection 'plc1'" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    import subprocess

    config = write_config(tmp_path, policy=tmp_path / "nope.onnx")
    proc = subprocess.run([sys.executable, "-m", "edgewarden.gateway.cli", "run", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 78  # a configuration matter: systemd does not restart on it
    assert f"policy.path: {tmp_path / 'nope.onnx'} does not exist" in proc.stderr and "Traceback" not in proc.stderr
