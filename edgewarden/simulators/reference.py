"""Reference tables of a plant's twin (OPC UA nodes, Modbus map), as docs/twins.md has them.

``python -m edgewarden.simulators.reference PLANT`` prints the Markdown; a test checks that the docs
hold exactly this text for every plant, so the docs cannot drift from the servers.
"""

from __future__ import annotations

import sys

from edgewarden.simulators.image import PlcImage, Tag, build_tags
from edgewarden.simulators.modbus_server import register_map
from edgewarden.simulators.plants import plant_class, plant_names

_TYPE = {"double": "Double", "bool": "Boolean", "uint32": "UInt32"}
_TABLE = {"ir": "input register (FC 4)", "hr": "holding register (FC 3/6/16)",
          "co": "coil (FC 1/5/15)", "di": "discrete input (FC 2)"}


def _range(tag: Tag) -> str:
    return "" if tag.low is None or tag.vtype != "double" else f"{tag.low:g} … {tag.high:g}"


def markdown(plant: str) -> str:
    """The OPC UA node table and the Modbus register map of ``plant``'s twin."""
    spec = plant_class(plant).spec
    image = PlcImage(build_tags(spec))
    out = [f"<!-- generated: python -m edgewarden.simulators.reference {plant} -->",
           f"OPC UA nodes (`ns=2;s={plant}.<tag>`, folder `Objects/{plant}/<Folder>`):", "",
           "| NodeId | Folder | Type | Access | Units | EURange | Default |",
           "|---|---|---|---|---|---|---|"]
    for tag in image.tags.values():
        default = str(tag.default).lower() if tag.vtype == "bool" else f"{tag.default:g}"
        out.append(f"| `ns=2;s={plant}.{tag.name}` | {tag.group} | {_TYPE[tag.vtype]} | "
                   f"{'R/W' if tag.writable else 'R'} | {tag.units} | {_range(tag)} | {default} |")
    out += ["", "Modbus map (device id 1):", "",
            "| Table | Address | Tag | Type | Scale | Units | Range | Access |",
            "|---|---|---|---|---|---|---|---|"]
    order = {"ir": 0, "hr": 1, "co": 2, "di": 3}
    for reg in sorted(register_map(image), key=lambda r: (order[r.table], r.address)):
        tag = image.tags[reg.tag]
        addr = f"{reg.address}–{reg.address + 1}" if reg.width == 2 else str(reg.address)
        scale = f"{reg.scale:g}" if reg.kind == "int16" else ("1" if reg.kind != "bit" else "")
        out.append(f"| {_TABLE[reg.table]} | {addr} | `{reg.tag}` | {reg.kind} | {scale} | "
                   f"{tag.units} | {_range(tag)} | {'R/W' if tag.writable else 'R'} |")
    out.append(f"<!-- end generated: {plant} -->")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(plant_names())
    for name in names:
        sys.stdout.write(markdown(name) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
