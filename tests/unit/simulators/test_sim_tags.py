"""The CSTR tag table and Modbus map are what docs/twins.md says they are."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgewarden.simulators.image import PlcImage, build_tags
from edgewarden.simulators.modbus_server import register_map
from edgewarden.simulators.plants import plant_names
from edgewarden.simulators.plants.cstr import SPEC
from edgewarden.simulators.reference import markdown

DOC = Path(__file__).resolve().parents[3] / "docs" / "twins.md"

EXPECTED = {
    "Measurements": ["T", "CA", "Tj", "coolant_flow", "feed_flow"],
    "Setpoints": ["T_sp", "coolant_flow_sp", "feed_flow_sp", "heartbeat", "estop_cmd",
                  "reset_cmd", "auto", "coolant_flow_man", "feed_flow_man"],
    "Status": ["remote", "estop", "watchdog_tripped"],
}


def test_tag_table_matches_the_brief() -> None:
    tags = build_tags(SPEC)
    for group, names in EXPECTED.items():
        assert [t.name for t in tags if t.group == group] == names
    by = {t.name: t for t in tags}
    assert by["heartbeat"].vtype == "uint32"
    assert {by[n].vtype for n in ("estop_cmd", "reset_cmd", "auto")} == {"bool"}
    assert by["auto"].default is True
    assert by["T_sp"].default == 350.0
    assert all(by[n].vtype == "bool" and not by[n].writable for n in EXPECTED["Status"])


@pytest.mark.parametrize("plant", plant_names())
def test_reference_tables_in_docs_match_the_code(plant: str) -> None:
    assert markdown(plant) in DOC.read_text(encoding="utf-8")


def test_cstr_register_map_keeps_its_addresses() -> None:
    regs = {(r.tag, r.table, r.kind): r.address
            for r in register_map(PlcImage(build_tags(SPEC)))}
    assert regs[("T", "ir", "float32")] == 0 and regs[("feed_flow", "ir", "float32")] == 8
    assert regs[("T_sp", "hr", "float32")] == 0 and regs[("heartbeat", "hr", "uint16")] == 10
    assert regs[("estop_cmd", "co", "bit")] == 0 and regs[("auto", "co", "bit")] == 2
    assert regs[("remote", "di", "bit")] == 0 and regs[("watchdog_tripped", "di", "bit")] == 2
    assert regs[("T", "ir", "int16")] == 1000 and regs[("T_sp", "hr", "int16")] == 1000


@pytest.mark.anyio
async def test_modbus_context_word_order_and_device_id() -> None:
    import struct

    from pymodbus.constants import ExcCodes

    from edgewarden.simulators.modbus_server import _ImageContext

    image = PlcImage(build_tags(SPEC))
    image.write("T_sp", 345.5)
    big = _ImageContext(image, 1, "big")
    little = _ImageContext(image, 1, "little")

    hi, lo = struct.unpack(">HH", struct.pack(">f", 345.5))
    assert await big.async_getValues(1, 3, 0, 2) == [hi, lo]
    assert await little.async_getValues(1, 3, 0, 2) == [lo, hi]
    assert await big.async_getValues(2, 3, 0, 2) == ExcCodes.GATEWAY_NO_RESPONSE
    hi, lo = struct.unpack(">HH", struct.pack(">f", 90.0))
    assert await little.async_setValues(1, 16, 2, [lo, hi]) is None
    assert image["coolant_flow_sp"] == 90.0
    assert await big.async_setValues(1, 16, 0, [1, 2, 3]) == ExcCodes.ILLEGAL_ADDRESS
    assert image["feed_flow_sp"] == 0.0  # a refused request changes nothing
    assert await big.async_setValues(1, 5, 2, [False]) is None
    assert image["auto"] is False
