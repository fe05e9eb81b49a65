"""Each plant's twin, read and written by plain asyncua and pymodbus clients exactly as the
reference tables in docs/twins.md say (parsed from the docs, not taken from the code)."""

from __future__ import annotations

import asyncio
import re
import struct
from pathlib import Path

import pytest
from asyncua import Client, ua
from pymodbus.client import AsyncModbusTcpClient

from edgewarden.simulators.twin import Twin

DOC = Path(__file__).resolve().parents[2] / "docs" / "twins.md"
TYPES = {"Double": ua.VariantType.Double, "Boolean": ua.VariantType.Boolean,
         "UInt32": ua.VariantType.UInt32}


def doc_tables(plant: str) -> tuple[list[dict], list[dict]]:
    text = DOC.read_text(encoding="utf-8")
    block = text.split(f"<!-- generated: python -m edgewarden.simulators.reference {plant} -->")[1]
    block = block.split(f"<!-- end generated: {plant} -->")[0]
    nodes, regs = [], []
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `ns=2"):
            nodes.append(dict(node=cells[0].strip("`"), folder=cells[1], type=cells[2],
                              access=cells[3], range=cells[5]))
        elif re.match(r"\| (input|holding|coil|discrete)", line):
            addr = cells[1].split("–")
            regs.append(dict(table=cells[0].split(" (")[0], start=int(addr[0]),
                             width=len(addr), tag=cells[2].strip("`"), kind=cells[3],
                             scale=float(cells[4]) if cells[4] else 1.0, access=cells[7]))
    return nodes, regs


@pytest.mark.anyio
@pytest.mark.parametrize("plant", ["tanks", "hvac"])
async def test_served_address_space_and_register_map_match_the_docs(plant: str) -> None:
    nodes, regs = doc_tables(plant)
    assert nodes and regs

    async with Twin(plant, scan_ms=10) as twin, Client(twin.opcua_url, timeout=5) as c:
        obj = await c.nodes.objects.get_child([f"2:{plant}"])
        folders = {(await f.read_browse_name()).Name: f for f in await obj.get_children()}
        assert list(folders) == ["Measurements", "Setpoints", "Status", "Alarms"]
        for row in nodes:
            node = c.get_node(row["node"])
            tag = row["node"].split(".", 1)[1]
            assert (await node.read_browse_name()).Name == tag
            parent = await node.get_parent()
            assert parent.nodeid == folders[row["folder"]].nodeid
            assert (await node.read_data_type_as_variant_type()) == TYPES[row["type"]]
            access = await node.get_user_access_level()
            assert (ua.AccessLevel.CurrentWrite in access) == (row["access"] == "R/W")
            if row["range"]:
                low, high = (float(x) for x in row["range"].split(" … "))
                rng = await (await node.get_child("0:EURange")).read_value()
                assert (rng.Low, rng.High) == (low, high)
                eu = await (await node.get_child("0:EngineeringUnits")).read_value()
                assert eu.DisplayName.Text
        # a read-only node refuses a write
        meas = next(r for r in nodes if r["folder"] == "Measurements")
        with pytest.raises(ua.UaStatusCodeError):
            await c.get_node(meas["node"]).write_value(1.0)

        twin.plc.time_scale = 1e-9  # hold the plant still while comparing values
        await asyncio.sleep(0.05)
        mb = AsyncModbusTcpClient("127.0.0.1", port=twin.modbus_port)
        await mb.connect()
        try:
            img = twin.plc.image
            for r in regs:
                if r["table"] == "input register":
                    words = (await mb.read_input_registers(r["start"], count=r["width"],
                                                           device_id=1)).registers
                elif r["table"] == "holding register":
                    words = (await mb.read_holding_registers(r["start"], count=r["width"],
                                                             device_id=1)).registers
                elif r["table"] == "coil":
                    bits = (await mb.read_coils(r["start"], count=1, device_id=1)).bits
                    assert bits[0] == img[r["tag"]]
                    continue
                else:
                    bits = (await mb.read_discrete_inputs(r["start"], count=1,
                                                          device_id=1)).bits
                    assert bits[0] == img[r["tag"]]
                    continue
                if r["kind"] == "float32":
                    value = struct.unpack(">f", struct.pack(">HH", *words))[0]
                    assert value == pytest.approx(img[r["tag"]], rel=1e-6, abs=1e-4)
                elif r["kind"] == "int16":
                    raw = words[0] - 0x10000 if words[0] & 0x8000 else words[0]
                    assert raw / r["scale"] == pytest.approx(img[r["tag"]],
                                                             abs=1 / r["scale"])
            # writes as documented: float32 and int16 setpoints
            sp = next(r for r in regs if r["kind"] == "float32" and r["access"] == "R/W")
            await mb.write_registers(sp["start"], values=list(
                struct.unpack(">HH", struct.pack(">f", 1.25))), device_id=1)
            assert img[sp["tag"]] == 1.25
            sp16 = next(r for r in regs if r["kind"] == "int16" and r["access"] == "R/W"
                        and r["tag"] == sp["tag"])
            await mb.write_register(sp16["start"], int(round(1.5 * sp16["scale"])),
                                    device_id=1)
            assert img[sp["tag"]] == pytest.approx(1.5)
            # past the end of a table, and into the gap before the int16 block
            last_ir = max(r["start"] + r["width"] for r in regs
                          if r["table"] == "input register" and r["start"] < 1000)
            for addr in (last_ir, 999):
                rr = await mb.read_input_registers(addr, count=1, device_id=1)
                assert rr.isError() and rr.exception_code == 2
        finally:
            mb.close()
