"""The preflight against an external PLC (here a twin nobody else drives): it refuses a PLC
whose setpoint registers are not at their safe values or whose heartbeat is moving."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from edgewarden.data import EXAMPLES, MODELS
from edgewarden.hil.gwconfig import prepare
from edgewarden.hil.runner import PreflightRefused, preflight
from edgewarden.hil.scenario import load_scenario
from edgewarden.simulators.twin import Twin

REPO = Path(__file__).resolve().parents[2]


def _scenario(tmp_path: Path, url: str) -> Path:
    p = tmp_path / "ext.toml"
    p.write_text(f"""
[scenario]
name = "ext"
duration_s = 1.0
[plant]
name = "cstr"
[plant.external]
opcua = "{url}"
[gateway]
config = "{EXAMPLES / 'cstr.toml'}"
model = "{MODELS / 'cstr_baseline.onnx'}"
""")
    return p


@pytest.mark.anyio
async def test_preflight_refuses_unsafe_and_accepts_safe(tmp_path: Path) -> None:
    logging.getLogger("asyncua").setLevel(logging.ERROR)

    async with Twin("cstr", modbus=None) as twin:
        sc = load_scenario(_scenario(tmp_path, twin.opcua_url))
        plan = prepare(sc, tmp_path, None)
        await preflight(twin.opcua_url, plan, 0.4)  # fresh twin: safe setpoints, no heartbeat
        twin.image.write("feed_flow_sp", 100.0)
        with pytest.raises(PreflightRefused, match=r"feed_flow_sp = 100.0, its safe value is 0"):
            await preflight(twin.opcua_url, plan, 0.4)
        twin.image.write("feed_flow_sp", 0.0)

        async def beat() -> None:
            for i in range(100):
                twin.image.write("heartbeat", i + 1)
                await asyncio.sleep(0.05)

        task = asyncio.create_task(beat())
        try:
            with pytest.raises(PreflightRefused, match="another gateway"):
                await preflight(twin.opcua_url, plan, 0.4)
        finally:
            task.cancel()


@pytest.mark.slow
def test_external_plc_run_records_over_opcua(tmp_path: Path) -> None:
    """A whole run against an 'external' PLC: a twin served by another process."""
    import json
    import subprocess
    import sys
    import time

    from edgewarden.hil.bench import run_one

    ready = tmp_path / "twin.json"
    twin = subprocess.Popen([sys.executable, "-m", "edgewarden.gateway.cli", "twin", "serve", "cstr", "--opcua",
                             "127.0.0.1:0", "--modbus", "none", "--ready-file", str(ready)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert time.monotonic() < deadline and twin.poll() is None, "twin did not start"
            time.sleep(0.1)
        url = json.loads(ready.read_text())["opcua_url"]
        text = _scenario(tmp_path, url).read_text().replace("duration_s = 1.0", "duration_s = 4.0")
        text += '\n[[events]]\nat = 2.0\nkind = "estop"\n[invariants]\nestop_reaction_ms = 400\n'
        path = tmp_path / "ext2.toml"
        path.write_text(text)
        summary, _, data, verdicts = run_one(load_scenario(path), tmp_path / "report", quiet=True,
                                             plots=False)
        assert "feed_flow_sp" in data.columns and len(data.times) > 40
        assert summary["result"] == "pass", summary["invariants"]
    finally:
        twin.terminate()
        twin.wait(10)
