"""The preflight against an external PLC (here a twin nobody else drives): it refuses a PLC
whose setpoint registers are not at their safe values or whose heartbeat is moving."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from hil.gwconfig import prepare
from hil.runner import PreflightRefused, preflight
from hil.scenario import load_scenario
from simulators.twin import Twin

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
config = "{REPO / 'examples' / 'cstr.toml'}"
model = "{REPO / 'models' / 'cstr_baseline.onnx'}"
""")
    return p


def test_preflight_refuses_unsafe_and_accepts_safe(tmp_path: Path) -> None:
    logging.getLogger("asyncua").setLevel(logging.ERROR)

    async def main() -> None:
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

    asyncio.run(main())
