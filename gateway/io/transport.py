"""The one transport interface the control cycle uses, plus its shared planning types.

A transport reads a snapshot of every readable tag (engineering units, quality, source
and receive timestamps) and writes pre-planned sets of tags. Writes are only ever
planned for tags marked writable, and values outside a tag's valid range never reach
the wire: both are refused here, below the shield, as a second line of defence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.config import TagSpec
from gateway.errors import ConfigError, TransportError
from gateway.io.tags import Snapshot


@dataclass(frozen=True)
class WritePlan:
    """A fixed, validated list of writable tags, prepared once and written many times."""

    names: tuple[str, ...]
    specs: tuple[TagSpec, ...]


def plan_writes(specs: dict[str, TagSpec], names: Sequence[str]) -> WritePlan:
    chosen = []
    for name in names:
        spec = specs.get(name)
        if spec is None:
            raise ConfigError(f"cannot write tag {name!r}: no such tag")
        if not spec.writable:
            raise ConfigError(f"cannot write tag {name!r}: it is not marked writable")
        chosen.append(spec)
    return WritePlan(names=tuple(names), specs=tuple(chosen))


def check_write(plan: WritePlan, values: Sequence[float]) -> None:
    """Refuse non-finite or out-of-range values before anything is sent."""
    if len(values) != len(plan.names):
        raise TransportError(f"write of {len(values)} values to {len(plan.names)} tags")
    for name, spec, v in zip(plan.names, plan.specs, values, strict=True):
        if not math.isfinite(v):
            raise TransportError(f"refused write of {v!r} to tag {name!r}: not a finite number")
        if spec.range is not None and not spec.range[0] <= v <= spec.range[1]:
            raise TransportError(f"refused write of {v} to tag {name!r}: outside its valid range "
                                 f"{list(spec.range)}")


@dataclass
class LinkHealth:
    """Per-connection health, shown to metrics and to the safety layer."""

    connected: bool = False
    state: str = "down"  # down | up | reconnecting | closed
    last_ok_mono: float = float("nan")
    reconnects: int = 0
    last_error: str = ""
    rtt_s: float = float("nan")


class Transport(Protocol):
    """What the control cycle needs from the plant I/O."""

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def read(self, snap: Snapshot) -> None:
        """Fill ``snap`` in place. Never raises for comms faults: marks values NO_DATA/BAD."""

    async def write(self, plan: WritePlan, values: Sequence[float]) -> None:
        """Write one value per planned tag (engineering units). Raises TransportError."""

    def health(self) -> dict[str, LinkHealth]: ...
