"""Watchdog drop-out/recovery and e-stop latch/reset on every plant's PLC (fake clock)."""

from __future__ import annotations

import numpy as np
import pytest

from edgewarden.simulators.plants import make_plant, plant_names
from edgewarden.simulators.plc import Plc

SCAN = 0.01


class Bench:
    def __init__(self, plant: str) -> None:
        self.plc = Plc(make_plant(plant), watchdog_ms=300)
        self.img = self.plc.image
        self.spec = self.plc.spec
        self.sp = self.spec.nominal_action
        for name, v in zip(self.spec.action_names(), self.sp, strict=True):
            self.img.write(f"{name}_sp", float(v))
        self.now, self.hb = 0.0, 0
        self.plc.scan(self.now)

    def run(self, seconds: float, heartbeat: bool = True) -> None:
        for _ in range(int(round(seconds / SCAN))):
            if heartbeat:
                self.hb += 1
                self.img.write("heartbeat", self.hb)
            self.now += SCAN
            self.plc.scan(self.now)

    def reset(self) -> None:
        self.img.write("reset_cmd", True)
        self.run(SCAN, heartbeat=False)


@pytest.mark.parametrize("plant", plant_names())
def test_watchdog_drop_out_and_recovery(plant: str) -> None:
    b = Bench(plant)
    safe = b.spec.safe_action_array
    b.run(0.1)
    assert b.plc.mode == "REMOTE"
    np.testing.assert_array_equal(b.plc.outputs, b.sp)
    b.run(0.3 + 2 * SCAN, heartbeat=False)
    assert b.img["watchdog_tripped"] and not b.img["remote"]
    np.testing.assert_array_equal(b.plc.outputs, safe)
    for name, v in zip(b.spec.action_names(), safe, strict=True):
        assert b.img[name] == v  # the applied outputs as served
    b.run(0.1)  # a fresh heartbeat alone does not restore REMOTE
    assert b.img["watchdog_tripped"]
    b.reset()
    assert b.plc.mode == "REMOTE" and not b.img["watchdog_tripped"]
    np.testing.assert_array_equal(b.plc.outputs, b.sp)


@pytest.mark.parametrize("plant", plant_names())
def test_estop_latch_and_reset(plant: str) -> None:
    b = Bench(plant)
    b.run(0.1)
    b.img.write("estop_cmd", True)
    b.run(SCAN)
    assert b.plc.mode == "ESTOP"
    np.testing.assert_array_equal(b.plc.outputs, b.spec.safe_action_array)
    b.reset()
    assert b.img["estop"]  # input still active
    b.img.write("estop_cmd", False)
    b.run(0.1)
    assert b.img["estop"]  # latched until reset
    b.reset()
    assert b.plc.mode == "REMOTE"
    np.testing.assert_array_equal(b.plc.outputs, b.sp)
