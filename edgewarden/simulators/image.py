"""The PLC process image: named, typed values shared by the PLC logic and both servers.

The image is the single source of truth of a twin. The PLC scan reads commands and
setpoints from it and writes measurements and status into it; the OPC UA and Modbus
servers serve it and land their clients' writes in it. The tag table is derived from a
plant's spec by :func:`build_tags`, so the servers are plant-generic:

    Measurements (read-only Double)  every plant observation, then every applied action
    Setpoints    (writable)          every plant target, ``<action>_sp`` per action,
                                     heartbeat (UInt32), estop_cmd, reset_cmd, auto (Boolean),
                                     ``<action>_man`` per action (manual-mode setpoints)
    Status       (read-only Boolean) remote, estop, watchdog_tripped
    Alarms       (read-only Boolean) ``ilk_<name>`` per PLC interlock (active), then
                                     ``soft_alarm`` and ``hard_alarm`` (an observation
                                     outside its soft / hard limit band)

Every change records a wall-clock source timestamp and bumps a per-tag sequence
number, which the OPC UA server uses to publish only what changed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from edgewarden.simulators.plants.base import PlantSpec

VType = Literal["double", "bool", "uint32"]
Quality = Literal["good", "uncertain", "bad"]
Group = Literal["Measurements", "Setpoints", "Status", "Alarms"]
Value = float | bool | int

UINT32_MASK = 0xFFFF_FFFF


@dataclass(frozen=True)
class Tag:
    """One image entry. ``low``/``high`` are the engineering range (None for booleans)."""

    name: str
    group: Group
    vtype: VType
    units: str = ""
    low: float | None = None
    high: float | None = None
    default: Value = 0.0
    description: str = ""

    @property
    def writable(self) -> bool:
        return self.group == "Setpoints"

    def coerce(self, value: object) -> Value:
        """The value as this tag's Python type; raises TypeError/ValueError if it cannot be."""
        if self.vtype == "double":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{self.name}: expected a number, got {type(value).__name__}")
            return float(value)
        if self.vtype == "bool":
            if not isinstance(value, bool | int):
                raise TypeError(f"{self.name}: expected a boolean, got {type(value).__name__}")
            return bool(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{self.name}: expected an integer, got {type(value).__name__}")
        return int(value) & UINT32_MASK


def build_tags(spec: PlantSpec) -> tuple[Tag, ...]:
    """The tag table of a plant's PLC, in the documented order (Modbus addresses follow it)."""
    tags: list[Tag] = []
    for s in spec.observations:
        tags.append(Tag(s.name, "Measurements", "double", s.units, s.low, s.high, s.default,
                        s.description))
    for s, safe in zip(spec.actions, spec.safe_action, strict=True):
        tags.append(Tag(s.name, "Measurements", "double", s.units, s.low, s.high, safe,
                        f"{s.description} (applied output)"))
    for s in spec.targets:
        tags.append(Tag(s.name, "Setpoints", "double", s.units, s.low, s.high, s.default,
                        s.description))
    for s, safe in zip(spec.actions, spec.safe_action, strict=True):
        tags.append(Tag(f"{s.name}_sp", "Setpoints", "double", s.units, s.low, s.high, safe,
                        f"{s.description} setpoint from the gateway (used in REMOTE)"))
    tags += [
        Tag("heartbeat", "Setpoints", "uint32", "", 0, UINT32_MASK, 0,
            "gateway alive counter; must change at least every watchdog period"),
        Tag("estop_cmd", "Setpoints", "bool", default=False,
            description="e-stop input (hardwired-style); latches estop"),
        Tag("reset_cmd", "Setpoints", "bool", default=False,
            description="reset pulse; acted on at a rising edge, cleared by the PLC"),
        Tag("auto", "Setpoints", "bool", default=True,
            description="hand/auto selector: True = AUTO (gateway may take REMOTE)"),
    ]
    for s, safe in zip(spec.actions, spec.safe_action, strict=True):
        tags.append(Tag(f"{s.name}_man", "Setpoints", "double", s.units, s.low, s.high, safe,
                        f"{s.description} manual setpoint (used in MANUAL)"))
    tags += [
        Tag("remote", "Status", "bool", default=False,
            description="the gateway's setpoints are applied"),
        Tag("estop", "Status", "bool", default=False, description="e-stop latched"),
        Tag("watchdog_tripped", "Status", "bool", default=False,
            description="heartbeat watchdog latched"),
    ]
    for ilk in spec.interlocks:
        tags.append(Tag(f"ilk_{ilk.name}", "Alarms", "bool", default=False,
                        description=f"interlock active: {ilk.description or ilk.name}"))
    tags += [
        Tag("soft_alarm", "Alarms", "bool", default=False,
            description="an observation is outside its soft limits"),
        Tag("hard_alarm", "Alarms", "bool", default=False,
            description="an observation is outside its hard limits"),
    ]
    return tuple(tags)


class PlcImage:
    """Named values with types, source timestamps and change sequence numbers."""

    def __init__(self, tags: tuple[Tag, ...]) -> None:
        self.tags: dict[str, Tag] = {t.name: t for t in tags}
        if len(self.tags) != len(tags):
            raise ValueError("duplicate tag names")
        now = time.time()
        self._values: dict[str, Value] = {t.name: t.coerce(t.default) for t in tags}
        self._stamps: dict[str, float] = dict.fromkeys(self.tags, now)
        self._seq: dict[str, int] = dict.fromkeys(self.tags, 0)
        self._quality: dict[str, Quality] = dict.fromkeys(self.tags, "good")
        # called with the tag name after every client/test write (the OPC UA server
        # publishes at once, so a write is visible to readers before the next scan)
        self.on_write: list[Callable[[str], None]] = []

    def __getitem__(self, name: str) -> Value:
        return self._values[name]

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def set(self, name: str, value: object) -> None:
        """Set a value from the PLC side (any tag). Only a change is stamped."""
        v = self.tags[name].coerce(value)
        old = self._values[name]
        if v == old or _both_nan(v, old):
            return
        self._values[name] = v
        self._stamps[name] = time.time()
        self._seq[name] += 1

    def write(self, name: str, value: object) -> None:
        """Set a value from a client: only Setpoints tags; raises KeyError/PermissionError."""
        tag = self.tags.get(name)
        if tag is None:
            raise KeyError(f"no tag {name!r}")
        if not tag.writable:
            raise PermissionError(f"tag {name!r} is read-only")
        self.set(name, value)
        for callback in self.on_write:
            callback(name)

    def set_quality(self, name: str, quality: Quality) -> None:
        """Sensor quality of a tag (served as an OPC UA status code); a change is stamped."""
        if quality not in ("good", "uncertain", "bad"):
            raise ValueError(f"quality must be good, uncertain or bad, got {quality!r}")
        if self._quality[name] != quality:
            self._quality[name] = quality
            self._stamps[name] = time.time()
            self._seq[name] += 1

    def quality(self, name: str) -> Quality:
        return self._quality[name]

    def stamp(self, name: str) -> float:
        """Wall-clock time (s since the epoch) of the tag's last change."""
        return self._stamps[name]

    def seq(self, name: str) -> int:
        """How many times the tag has changed."""
        return self._seq[name]

    def snapshot(self) -> dict[str, Value]:
        return dict(self._values)


def _both_nan(a: Value, b: Value) -> bool:
    return isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
