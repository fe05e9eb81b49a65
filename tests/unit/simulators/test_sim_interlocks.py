"""PLC interlocks per plant: forced outputs in every mode, hysteresis, alarm flags."""

from __future__ import annotations

import numpy as np

from edgewarden.simulators.plants import make_plant
from edgewarden.simulators.plc import Plc


def manual(plc: Plc, **values: float) -> None:
    plc.image.write("auto", False)
    for name, v in values.items():
        plc.image.write(f"{name}_man", v)


def test_cstr_high_temperature_interlock_with_hysteresis() -> None:
    plc = Plc(make_plant("cstr"))
    manual(plc, coolant_flow=0.0, feed_flow=100.0)  # the runaway
    t = 0.0
    while not plc.image["ilk_high_temperature"]:
        t += 1.0
        plc.scan(t)
        assert t < 300
    assert plc.image["T"] > 390.0 and plc.image["soft_alarm"]
    np.testing.assert_array_equal(plc.outputs, [200.0, 0.0])  # forced despite MANUAL
    while plc.image["T"] > 380.0:
        t += 1.0
        plc.scan(t)
        if plc.image["T"] > 380.5:
            assert plc.image["ilk_high_temperature"]  # held inside the hysteresis band
    t += 1.0
    plc.scan(t)
    assert not plc.image["ilk_high_temperature"]


def test_tanks_high_level_and_dry_run_interlocks() -> None:
    plc = Plc(make_plant("tanks"))
    manual(plc, pump1=10.0, pump2=10.0)
    seen = set()
    for k in range(1, 1200):
        plc.scan(float(k))
        seen |= {n for n in plc.image if n.startswith("ilk_") and plc.image[n]}
    assert {"ilk_high_h1", "ilk_high_h2"} <= seen
    assert plc.image["h1"] < 20.0 and plc.image["h2"] < 20.0  # never spilled for long
    assert not plc.image["hard_alarm"] or plc.image["h_sump"] >= 1.5


def test_hvac_never_heats_and_cools_at_once() -> None:
    plc = Plc(make_plant("hvac"))
    manual(plc, heating=10.0, cooling=5.0, ventilation=600.0)
    plc.scan(0.0)
    plc.scan(1.0)
    assert plc.image["ilk_heat_cool"]
    np.testing.assert_array_equal(plc.outputs, [0.0, 5.0, 600.0])
    plc.image.write("cooling_man", 0.0)
    plc.scan(2.0)
    assert not plc.image["ilk_heat_cool"] and plc.outputs[0] == 10.0


def test_hvac_co2_interlock_forces_full_ventilation() -> None:
    plant = make_plant("hvac", start_hour=8.0)
    plc = Plc(plant)
    manual(plc, heating=6.0, ventilation=0.0)
    for k in range(1, 4 * 60):
        plc.scan(60.0 * k)
        if plc.image["ilk_co2_high"]:
            break
    assert plc.image["ilk_co2_high"] and plc.outputs[2] == 1200.0
