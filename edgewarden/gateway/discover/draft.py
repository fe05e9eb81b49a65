"""The draft config ``discover`` writes: every tag found, with what the server said about
it (data type, units, range, writability), in a config that runs read-only
(``[policy] kind = "monitor"``) once a person has made the decisions marked ``DECIDE``:
which tags the policy sees and drives, each action's bounds and safe value, the heartbeat
tag. ``config check`` names each decision still open, as the missing key it is."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from edgewarden.gateway.tomlwrite import toml_comment, toml_key, toml_value

HEARTBEAT_WORDS = ("heartbeat", "watchdog", "alive", "lifebit", "life_bit", "hb")
INTEGER = ("int16", "uint16", "int32", "uint32")


@dataclass
class Found:
    """One value the server has, as a tag the gateway could read (and write)."""

    name: str
    source: dict[str, Any]  # node = "..." (OPC UA) or table/address/... (Modbus)
    datatype: str
    units: str = ""
    range: tuple[float, float] | None = None
    writable: bool = False
    description: str = ""
    scale: float = 1.0
    offset: float = 0.0
    note: str = ""  # a remark for the person deciding (e.g. this login cannot write it)


@dataclass
class Discovery:
    connection: dict[str, Any]  # the [connections.plc] table
    found: list[Found]
    origin: str  # what was browsed or imported, for the header
    skipped: list[str] = field(default_factory=list)  # values not offered as tags, and why
    truncated: str = ""  # why the browse stopped early, if it did


def tag_name(raw: str, taken: set[str]) -> str:
    """A config key from a browse name: letters, digits and _; unique among ``taken``
    regardless of case (``config check`` refuses two names that differ only by it)."""
    name = re.sub(r"[^A-Za-z0-9_]+", "_", raw).strip("_") or "tag"
    if name[0].isdigit():
        name = f"t_{name}"
    base, n = name, 2
    while name.lower() in taken:
        name, n = f"{base}_{n}", n + 1
    taken.add(name.lower())
    return name


def _heartbeat(found: list[Found]) -> Found | None:
    for f in found:
        if f.writable and f.datatype in INTEGER and any(w in f.name.lower() for w in HEARTBEAT_WORDS):
            return f
    return None


def summary(d: Discovery) -> str:
    return (f"{len(d.found)} tag(s), {sum(f.writable for f in d.found)} writable, from {d.origin}"
            + (f"; {len(d.skipped)} value(s) skipped" if d.skipped else ""))


def render(d: Discovery, command: str) -> str:
    hb = _heartbeat(d.found)
    # proposed: numbers the gateway writes are actions, numbers it reads are what the policy
    # sees; booleans are commands and states (candidates for the PLC status keys below)
    writable = [f for f in d.found if f.writable and f is not hb and f.datatype != "bool"]
    readable = [f for f in d.found if not f.writable and f.datatype != "bool"]
    flags = [f for f in d.found if f.datatype == "bool"]
    out = [
        # everything after a "#" that came from the server (or the command line) goes
        # through toml_comment: a name with a line break in it cannot start a live table
        f"# Draft written by: {toml_comment(command)}",
        f"# {toml_comment(summary(d))}" + (" (listed at the end)" if d.skipped else ""),
        *([f"# The browse stopped early: {toml_comment(d.truncated)}"] if d.truncated else []),
        "#",
        "# It runs read-only ([policy] kind = \"monitor\": nothing is written, not even the",
        "# heartbeat) once you have made the decisions marked DECIDE below:",
        "#   - policy.observations / policy.actions: what the policy sees and what it drives,",
        "#   - for each action: min/max (the bounds the gateway may write) and safe (the value",
        "#     written on e-stop: inside [min, max], and what the PLC itself does when the",
        "#     gateway goes silent; a tag's range must hold the values the PLC itself writes",
        "#     there, its dead-man's safe output included, or they read as bad data),",
        "#   - safety.heartbeat_tag: the writable counter the PLC's dead-man timer watches,",
        "#   - limits on the measurements that must trip (safety.limits), optional but wise.",
        "# `edgewarden config check THIS_FILE` names every decision still open; when it says OK,",
        "# run it (monitor), then kind = \"pid\" with [policy.pid.ACTION] loops, or a model.",
        "# docs/commissioning.md walks through it.",
        "",
        "[gateway]",
        'name = "plant"',
        "cycle_hz = 10.0            # DECIDE: the control rate the plant needs",
        "comms_timeout_ms = 1000.0  # silence this long ends in the safe state (+ one cycle)",
        "",
        "[connections.plc]",
        *(f"{toml_key(k)} = {toml_value(v)}" for k, v in d.connection.items()),
        *(["# the password: never here. Set EDGEWARDEN_CONNECTIONS__PLC__PASSWORD, or",
           '# password_credential = "NAME" with `service install --credential NAME=FILE`'] if "username" in d.connection
          else []),
        "",
        "# ---- Tags: what the server said (data type, units, EURange, write access) -----------",
    ]
    for f in d.found:
        out += ["", f"[tags.{toml_key(f.name)}]", 'connection = "plc"']
        out += [f"{toml_key(k)} = {toml_value(v)}" for k, v in f.source.items()]
        out.append(f"datatype = {toml_value(f.datatype)}")
        if f.units:
            out.append(f"units = {toml_value(f.units)}")
        if f.range is not None:
            out.append(f"range = {toml_value(list(f.range))}   # outside = bad data")
        if f.scale != 1.0 or f.offset != 0.0:
            out += [f"scale = {toml_value(f.scale)}", f"offset = {toml_value(f.offset)}"]
        if f.writable:
            out.append("writable = true" + (f"   # {toml_comment(f.note)}" if f.note else ""))
        if f.description:
            out.append(f"description = {toml_value(f.description)}")
    out += [
        "",
        "# ---- Policy: start read-only -----------------------------------------------------",
        "[policy]",
        'kind = "monitor"',
        f"observations = {toml_value([f.name for f in readable])}   # DECIDE: what the policy sees, in order",
        f"actions = {toml_value([f.name for f in writable])}   # DECIDE: what it drives (each needs [safety.actions])",
        "",
        "# ---- Safety ----------------------------------------------------------------------",
        "[safety]",
        (f"heartbeat_tag = {toml_value(hb.name)}   # DECIDE: confirm the PLC's dead-man watches it" if hb else
         "# heartbeat_tag = \"...\"   # DECIDE (required): a writable integer tag the PLC's dead-man timer watches"),
        *([f"# The PLC's states, if it has them (boolean tags found: {', '.join(f.name for f in flags)}):",
           "# estop_input = \"...\"       # true = the PLC's e-stop is active (trips)",
           "# hand_auto_tag = \"...\"     # false = the PLC is in hand (MANUAL)",
           "# plc_remote_tag = \"...\"    # true = the PLC applies the gateway's setpoints",
           "# plc_watchdog_tag = \"...\"  # true = the PLC's dead-man has tripped"] if flags else []),
        "",
        "# [safety.limits.NAME] per measurement: hard = [lo, hi] trips, soft = [lo, hi] alarms,",
        "# max_rate = per second (faster is a sensor fault). DECIDE which, from the process.",
    ]
    for f in writable:
        out += ["", f"[safety.actions.{toml_key(f.name)}]"]
        if f.range is not None:
            out += [f"min = {toml_value(f.range[0])}   # from its EURange; DECIDE: the bounds the gateway may write",
                    f"max = {toml_value(f.range[1])}"]
        else:
            out += ["# min = ...   # DECIDE (required): the lowest value the gateway may write",
                    "# max = ...   # DECIDE (required): the highest"]
        out += ["# max_rate = ...   # optional: largest change per second",
                "# safe = ...   # DECIDE (required): written on e-stop, inside [min, max] and the tag's range"]
    out += [
        "",
        "[audit]",
        'dir = "var/audit"   # relative to this file; the service install moves it to /var/lib/edgewarden',
        "",
        "[control]",
        'socket = "var/control.sock"',
    ]
    if d.skipped:
        out += ["", "# ---- Not offered as tags -------------------------------------------------------"]
        out += [f"# {toml_comment(line)}" for line in d.skipped]
    return "\n".join(out) + "\n"
