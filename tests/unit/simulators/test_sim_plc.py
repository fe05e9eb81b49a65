"""PLC scan logic without a network: watchdog, e-stop latch, reset, hand/auto."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgewarden.simulators.plants.cstr import SAFE_ACTION, CstrPlant
from edgewarden.simulators.plc import Plc

SCAN = 0.01  # s
SP = np.array([120.0, 90.0])


class Bench:
    """A PLC driven by a fake clock, with a gateway that can write its heartbeat."""

    def __init__(self, watchdog_ms: float = 500.0) -> None:
        self.plc = Plc(CstrPlant(), watchdog_ms=watchdog_ms)
        self.img = self.plc.image
        self.now = 100.0
        self.hb = 0
        self.img.write("coolant_flow_sp", SP[0])
        self.img.write("feed_flow_sp", SP[1])
        self.plc.scan(self.now)

    def run(self, seconds: float, heartbeat: bool = True) -> None:
        for _ in range(int(round(seconds / SCAN))):
            if heartbeat:
                self.hb += 1
                self.img.write("heartbeat", self.hb)
            self.now += SCAN
            self.plc.scan(self.now)

    def pulse_reset(self) -> None:
        """One scan with reset_cmd written true (and no new heartbeat)."""
        self.img.write("reset_cmd", True)
        self.run(SCAN, heartbeat=False)

    @property
    def outputs(self) -> np.ndarray:
        return self.plc.outputs


def test_starts_local_with_safe_outputs() -> None:
    b = Bench()
    assert b.plc.mode == "LOCAL"
    assert b.img["remote"] is False and b.img["estop"] is False
    assert b.img["watchdog_tripped"] is False
    np.testing.assert_array_equal(b.outputs, SAFE_ACTION)
    assert b.img["coolant_flow"] == SAFE_ACTION[0] and b.img["feed_flow"] == SAFE_ACTION[1]
    # no heartbeat ever: stays LOCAL, and no latch
    b.run(2.0, heartbeat=False)
    assert b.plc.mode == "LOCAL" and b.img["watchdog_tripped"] is False


def test_first_heartbeats_take_remote_without_reset() -> None:
    b = Bench()
    b.run(0.05)
    assert b.img["remote"] is True and b.plc.mode == "REMOTE"
    np.testing.assert_array_equal(b.outputs, SP)
    assert b.img["coolant_flow"] == SP[0]
    # setpoints are clipped to the action bounds, NaN gives the safe value
    b.img.write("coolant_flow_sp", 1e9)
    b.img.write("feed_flow_sp", math.nan)
    b.run(SCAN)
    np.testing.assert_array_equal(b.outputs, [200.0, SAFE_ACTION[1]])


def test_watchdog_drops_to_safe_within_watchdog_time_and_latches() -> None:
    b = Bench(watchdog_ms=500)
    b.run(0.2)
    assert b.img["remote"]
    stall_start = b.now
    while b.img["remote"]:
        b.run(SCAN, heartbeat=False)
    assert b.now - stall_start <= 0.5 + SCAN + 1e-9
    assert b.now - stall_start >= 0.5 - 1e-9
    np.testing.assert_array_equal(b.outputs, SAFE_ACTION)
    assert b.img["watchdog_tripped"] is True
    # a fresh heartbeat alone does not restore REMOTE
    b.run(1.0)
    assert b.img["remote"] is False and b.img["watchdog_tripped"] is True
    np.testing.assert_array_equal(b.outputs, SAFE_ACTION)


def test_watchdog_reset_needs_a_fresh_heartbeat() -> None:
    b = Bench()
    b.run(0.1)
    b.run(0.6, heartbeat=False)
    assert b.img["watchdog_tripped"]
    b.pulse_reset()  # heartbeat still stale: the latch stays
    assert b.img["watchdog_tripped"] and not b.img["remote"]
    assert b.img["reset_cmd"] is False  # the PLC clears the pulse
    b.run(0.1)
    assert b.img["watchdog_tripped"]
    b.pulse_reset()  # heartbeat fresh again: cleared, REMOTE again
    assert not b.img["watchdog_tripped"] and b.img["remote"]
    np.testing.assert_array_equal(b.outputs, SP)


def test_estop_latches_and_clears_only_on_reset_with_input_released() -> None:
    b = Bench()
    b.run(0.1)
    b.img.write("estop_cmd", True)
    b.run(SCAN)
    assert b.img["estop"] and not b.img["remote"] and b.plc.mode == "ESTOP"
    np.testing.assert_array_equal(b.outputs, SAFE_ACTION)
    b.pulse_reset()  # e-stop input still active: no reset
    assert b.img["estop"]
    b.img.write("estop_cmd", False)
    b.run(0.5)
    assert b.img["estop"], "releasing the e-stop input must not clear the latch"
    np.testing.assert_array_equal(b.outputs, SAFE_ACTION)
    b.pulse_reset()
    assert not b.img["estop"] and b.img["remote"]
    np.testing.assert_array_equal(b.outputs, SP)


def test_estop_and_watchdog_latches_are_independent() -> None:
    b = Bench()
    b.run(0.1)
    b.img.write("estop_cmd", True)
    b.run(0.6, heartbeat=False)
    assert b.img["estop"] and b.img["watchdog_tripped"]
    b.img.write("estop_cmd", False)
    b.pulse_reset()  # clears the e-stop; the watchdog needs a fresh heartbeat
    assert not b.img["estop"] and b.img["watchdog_tripped"]
    b.run(0.05)
    b.pulse_reset()
    assert not b.img["watchdog_tripped"] and b.img["remote"]


def test_hand_auto() -> None:
    b = Bench()
    b.run(0.1)
    assert b.img["remote"]
    b.img.write("auto", False)
    b.run(SCAN)
    assert b.plc.mode == "MANUAL" and not b.img["remote"]
    np.testing.assert_array_equal(b.outputs, SAFE_ACTION)  # manual defaults: safe values
    b.img.write("coolant_flow_man", 80.0)
    b.img.write("feed_flow_man", 40.0)
    b.run(SCAN)
    np.testing.assert_array_equal(b.outputs, [80.0, 40.0])
    # manual keeps working when the gateway goes away (the watchdog still latches)
    b.run(1.0, heartbeat=False)
    assert b.img["watchdog_tripped"]
    np.testing.assert_array_equal(b.outputs, [80.0, 40.0])
    # e-stop overrides manual
    b.img.write("estop_cmd", True)
    b.run(SCAN)
    np.testing.assert_array_equal(b.outputs, SAFE_ACTION)
    b.img.write("estop_cmd", False)
    b.run(0.1)  # gateway back
    b.pulse_reset()
    assert not b.img["estop"] and not b.img["watchdog_tripped"]
    np.testing.assert_array_equal(b.outputs, [80.0, 40.0])  # still MANUAL
    b.img.write("auto", True)
    b.run(SCAN)
    assert b.img["remote"]
    np.testing.assert_array_equal(b.outputs, SP)


def test_plant_is_driven_by_the_applied_outputs() -> None:
    b = Bench()
    t0 = b.img["T"]
    b.run(30.0, heartbeat=False)  # LOCAL: safe outputs cool the reactor
    assert b.img["T"] < t0 - 1.0
    assert b.plc.plant.time_s == pytest.approx(30.0)


def test_time_scale_and_image_rules() -> None:
    plc = Plc(CstrPlant(), time_scale=60.0)
    plc.scan(0.0)
    plc.scan(1.0)
    assert plc.plant.time_s == pytest.approx(60.0)
    with pytest.raises(PermissionError):
        plc.image.write("T", 1.0)
    with pytest.raises(PermissionError):
        plc.image.write("remote", True)
    with pytest.raises(KeyError):
        plc.image.write("nope", 1.0)
    with pytest.raises(TypeError):
        plc.image.write("coolant_flow_sp", "fast")
    plc.image.write("heartbeat", 2**32 + 5)
    assert plc.image["heartbeat"] == 5
    with pytest.raises(ValueError):
        Plc(CstrPlant(), watchdog_ms=0)
