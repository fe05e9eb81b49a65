"""The CSTR tag table and Modbus map are what docs/twins.md says they are."""

from __future__ import annotations

import re
from pathlib import Path

from simulators.image import PlcImage, build_tags
from simulators.modbus_server import register_map
from simulators.plants.cstr import SPEC

DOC = Path(__file__).resolve().parents[3] / "docs" / "twins.md"

EXPECTED = {
    "Measurements": ["T", "CA", "Tj", "coolant_flow", "feed_flow"],
    "Setpoints": ["T_sp", "coolant_flow_sp", "feed_flow_sp", "heartbeat", "estop_cmd",
                  "reset_cmd", "auto", "coolant_flow_man", "feed_flow_man"],
    "Status": ["remote", "estop", "watchdog_tripped"],
}
TABLES = {"input register": "ir", "holding register": "hr", "coil": "co",
          "discrete input": "di"}


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


def test_register_map_matches_docs() -> None:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Modbus TCP register map", 1)[1].split("\n## ", 1)[0]
    documented = set()
    table = None
    for line in section.splitlines():
        m = re.match(r"\| ([a-z ]+?)(?: \(FC [0-9/]+\))? \| ([0-9]+)(?:–([0-9]+))? \| `(\w+)`"
                     r"[^|]* \| (\w+)", line)
        if not m:
            continue
        table = TABLES[m.group(1)]
        start = int(m.group(2))
        width = int(m.group(3)) - start + 1 if m.group(3) else 1
        documented.add((m.group(4), table, start, width, m.group(5)))
    actual = {(r.tag, r.table, r.address, r.width, r.kind)
              for r in register_map(PlcImage(build_tags(SPEC)))}
    assert documented == actual


def test_modbus_context_word_order_and_device_id() -> None:
    import asyncio
    import struct

    from pymodbus.constants import ExcCodes

    from simulators.modbus_server import _ImageContext

    image = PlcImage(build_tags(SPEC))
    image.write("T_sp", 345.5)
    big = _ImageContext(image, 1, "big")
    little = _ImageContext(image, 1, "little")

    async def main() -> None:
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

    asyncio.run(main())
