"""A Modbus register list as tags. Modbus cannot be browsed, so the plant's list (from the
PLC program or the device manual) is imported from CSV, one register (or coil) a row:

    name,table,address,datatype,scale,offset,units,writable,low,high,unit,word_order,description

``name``, ``table`` (holding, input, coil, discrete) and ``address`` (0-based protocol
address) are required; the rest may be empty (datatype: uint16 for registers, bool for
coils; scale 1, offset 0; writable: true/false/yes/no/1/0; low/high: the valid range in
engineering units; unit: the device id, 1). Lines starting with # are comments. Every bad
row is reported at once, by line, and nothing is written."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import get_args

from edgewarden.gateway.configbase import DataType
from edgewarden.gateway.discover.draft import Found, tag_name
from edgewarden.gateway.errors import ConfigError
from edgewarden.gateway.io.modbus.connection import ModbusTable
from edgewarden.gateway.readfile import read_regular

COLUMNS = ("name", "table", "address", "datatype", "scale", "offset", "units", "writable", "low", "high", "unit",
           "word_order", "description")
_FLAGS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False, "": False}


def read_register_list(path: Path) -> list[Found]:
    data = read_regular(path, what="register list", max_bytes=64 * 2**20, error=ConfigError)
    try:
        text = data.decode("utf-8-sig")  # a spreadsheet's BOM is not a column name
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}): save the list as "
                          "CSV UTF-8") from None
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    found: list[Found] = []
    problems: list[str] = []
    taken: set[str] = set()
    try:
        for row in reader:
            if not any(c.strip() for c in row) or row[0].lstrip().startswith("#"):
                continue  # blank lines and comments, anywhere
            if header is None:
                header = [c.strip() for c in row]
                unknown = [c for c in header if c not in COLUMNS]
                missing = [c for c in ("name", "table", "address") if c not in header]
                if unknown or missing:
                    raise ConfigError(f"{path}:{reader.line_num}: the header must name columns from "
                                      f"{', '.join(COLUMNS)}" + (f"; unknown: {', '.join(unknown)}" if unknown else "")
                                      + (f"; missing: {', '.join(missing)}" if missing else ""))
                continue
            cell = {k: v.strip() for k, v in zip(header, row, strict=False)}
            try:
                found.append(_row(cell, taken))
            except ValueError as exc:
                problems.append(f"  {path}:{reader.line_num}: {exc}")
    except csv.Error as exc:
        raise ConfigError(f"{path}:{reader.line_num}: not valid CSV: {exc}") from None
    if problems:
        raise ConfigError(f"{path}: {len(problems)} bad row(s), nothing written:\n" + "\n".join(problems))
    if not found:
        raise ConfigError(f"{path}: no registers listed")
    return found


def _row(cell: dict[str, str], taken: set[str]) -> Found:
    name = cell.get("name", "")
    if not name:
        raise ValueError("name is empty")
    table = cell.get("table", "").lower()
    if table not in get_args(ModbusTable):
        raise ValueError(f"{name}: table {table!r} is not one of {', '.join(get_args(ModbusTable))}")
    bits = table in ("coil", "discrete")
    datatype = cell.get("datatype") or ("bool" if bits else "uint16")
    if datatype not in get_args(DataType):
        raise ValueError(f"{name}: datatype {datatype!r} is not one of {', '.join(get_args(DataType))}")
    if bits and datatype != "bool":
        raise ValueError(f"{name}: a {table} holds one bit: datatype must be bool")
    writable = _FLAGS.get(cell.get("writable", "").lower())
    if writable is None:
        raise ValueError(f"{name}: writable {cell['writable']!r} is not true or false")
    if writable and table in ("input", "discrete"):
        raise ValueError(f"{name}: {table} registers are read-only in Modbus")
    address, unit = _int(cell, "address", None, name), _int(cell, "unit", 1, name)
    source: dict[str, object] = {"table": table, "address": address}
    if unit != 1:
        source["unit"] = unit
    if cell.get("word_order"):
        source["word_order"] = cell["word_order"]
    low, high = _float(cell, "low", None, name), _float(cell, "high", None, name)
    if (low is None) != (high is None) or (low is not None and high is not None and not low < high):
        raise ValueError(f"{name}: low and high go together, low < high")
    scale, offset = _float(cell, "scale", 1.0, name), _float(cell, "offset", 0.0, name)
    if not scale:
        raise ValueError(f"{name}: scale must not be 0 (engineering value = raw * scale + offset)")
    return Found(name=tag_name(name, taken), source=source, datatype=datatype, units=cell.get("units", ""),
                 range=None if low is None or high is None else (low, high), writable=writable,
                 description=cell.get("description", ""), scale=scale, offset=offset or 0.0)


def _int(cell: dict[str, str], key: str, default: int | None, name: str) -> int:
    raw = cell.get(key, "")
    if raw == "" and default is not None:
        return default
    try:
        return int(raw, 0)
    except ValueError:
        raise ValueError(f"{name}: {key} {raw!r} is not an integer") from None


def _float(cell: dict[str, str], key: str, default: float | None, name: str) -> float | None:
    raw = cell.get(key, "")
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}: {key} {raw!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name}: {key} must be finite")
    return value
