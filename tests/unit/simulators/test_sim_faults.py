"""FaultInjector without a network: sensor faults through the PLC, self-clearing, logging."""

from __future__ import annotations

import asyncio
import logging

import pytest

from edgewarden.simulators.faults import FaultInjector
from edgewarden.simulators.plants import make_plant
from edgewarden.simulators.plc import Plc


@pytest.mark.anyio
async def test_sensor_faults_reach_the_image_and_clear_themselves(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edgewarden.simulators.faults")

    plc = Plc(make_plant("tanks"))
    inj = FaultInjector(plc.spec.observation_names())
    plc.faults = inj
    plc.scan(0.0)
    true_h1 = plc.image["h1"]
    f = await inj.inject("bias", "h1", value=2.0, duration_s=0.05)
    await inj.inject("bad", "h2")
    plc.scan(0.001)
    assert plc.image["h1"] == pytest.approx(true_h1 + 2.0, abs=1e-3)
    assert plc.image.quality("h2") == "bad" and plc.image.quality("h1") == "good"
    await asyncio.sleep(0.1)
    assert f.id not in inj.active and len(inj.active) == 1
    await inj.clear()
    plc.scan(0.002)
    assert plc.image.quality("h2") == "good"
    assert plc.image["h1"] == pytest.approx(true_h1, abs=1e-3)
    with pytest.raises(ValueError, match="prob"):
        await inj.inject("spike", "h1", magnitude=1.0, prob=2.0)
    with pytest.raises(ValueError, match="unknown fault parameter"):
        await inj.inject("bias", "h1", offset=1.0)
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("fault inject:") for m in messages) == 2
    assert sum(m.startswith("fault clear:") for m in messages) == 2
