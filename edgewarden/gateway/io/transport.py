"""The one transport interface the control cycle uses, plus its shared planning types.

A transport reads a snapshot of every readable tag (engineering units, quality, source
and receive timestamps) and writes pre-planned sets of tags.

Time budget: every read and write takes the cycle's ``deadline`` (``time.monotonic()``
seconds). The cycle waits no longer, whatever the library's own timeout. A read still
unanswered then goes on (LinkedTransport overlaps reads with cycles: the link's values
stay the newest answered ones, with their receive times, until it answers); a write
reports the
tags as not acknowledged. A link is dropped (and reconnected in the background) only when
it has answered nothing for its own ``timeout_s``; a late answer is discarded by the
library (asyncua matches answers by request id, pymodbus by transaction id).

Writes are only ever planned for tags marked writable, and values outside a tag's valid
range never reach the wire: both are refused here, below the shield, as a second line of
defence.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from edgewarden.gateway.config import TagSpec
from edgewarden.gateway.errors import ConfigError, TransportError
from edgewarden.gateway.io.tags import Snapshot


_BIGGEST = sys.float_info.max


@dataclass(frozen=True)
class WritePlan:
    """A fixed, validated list of writable tags, prepared once and written many times."""

    names: tuple[str, ...]
    specs: tuple[TagSpec, ...]
    # each tag's valid range as plain floats (± the largest float where it has none), so
    # the per-write check reads no config objects: lo <= v <= hi is False for NaN and ±inf
    lo: tuple[float, ...] = field(init=False, repr=False, compare=False)
    hi: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # (config ranges are finite: edgewarden.gateway.config refuses others)
        object.__setattr__(self, "lo", tuple(-_BIGGEST if s.range is None else float(s.range[0]) for s in self.specs))
        object.__setattr__(self, "hi", tuple(_BIGGEST if s.range is None else float(s.range[1]) for s in self.specs))


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
    for v, lo, hi in zip(values, plan.lo, plan.hi):  # noqa: B905 (lengths checked above)
        if not lo <= v <= hi:
            break
    else:
        return
    for name, spec, v in zip(plan.names, plan.specs, values, strict=True):  # which one, and why
        if not math.isfinite(v):
            raise TransportError(f"refused write of {v!r} to tag {name!r}: not a finite number")
        if spec.range is not None and not spec.range[0] <= v <= spec.range[1]:
            raise TransportError(f"refused write of {v} to tag {name!r}: outside its valid range "
                                 f"{list(spec.range)}")
    raise TransportError(f"refused write of {list(values)}: a value is outside its tag's valid range")


class WriteError(TransportError):
    """A write that did not reach, or was not acknowledged by, every planned tag.

    ``outcomes`` has one entry per planned tag: ``"ok"`` (acknowledged), ``"failed: …"``
    (refused or the link failed), ``"timeout"`` (sent, no answer by the deadline) or
    ``"not_attempted: …"`` (never sent)."""

    def __init__(self, message: str, outcomes: Sequence[str]) -> None:
        super().__init__(message)
        self.outcomes = list(outcomes)


def write_error(plan: WritePlan, positions: Sequence[int], outcome: str, message: str) -> WriteError:
    """A WriteError whose tags at ``positions`` have ``outcome`` and the rest ``"ok"``."""
    outcomes = ["ok"] * len(plan.names)
    for i in positions:
        outcomes[i] = outcome
    return WriteError(message, outcomes)


def merge_outcomes(n: int, parts: Sequence[tuple[Sequence[int], BaseException | None]]) -> WriteError | None:
    """One WriteError over the sub-writes of a plan of ``n`` tags (each: its positions in the
    plan and its result), or None if all were acknowledged. A sub-write's WriteError lists
    outcomes for the whole plan (a transport's links) or for its own positions only (the
    composite's sub-plans); any other exception fails its positions."""
    outcomes = ["ok"] * n
    first: BaseException | None = None
    for positions, res in parts:
        if res is None:
            continue
        first = first or res
        if not isinstance(res, WriteError):
            sub = [f"failed: {res}"] * len(positions)
        elif len(res.outcomes) == n:
            sub = [res.outcomes[i] for i in positions]
        else:
            sub = res.outcomes
        for i, outcome in zip(positions, sub, strict=True):
            outcomes[i] = outcome
    return None if first is None else WriteError(str(first), outcomes)


def time_left(deadline: float | None, own_s: float) -> float:
    """Seconds an I/O request may take: its own timeout, cut at the cycle's deadline."""
    if deadline is None:
        return own_s
    return max(0.0, min(own_s, deadline - time.monotonic()))


def bounded(deadline: float | None, own_s: float) -> asyncio.Timeout:
    """``asyncio.timeout`` for one request: its own timeout or the cycle's deadline."""
    return asyncio.timeout(time_left(deadline, own_s))


@dataclass
class LinkHealth:
    """Per-connection health, shown to metrics and to the safety layer."""

    connected: bool = False
    state: str = "down"  # down | up | reconnecting | closed
    last_ok_mono: float = float("nan")
    reconnects: int = 0
    last_error: str = ""
    rtt_s: float = float("nan")
    late: int = 0  # reads not answered by the cycle's deadline (they go on; the link kept)


class Transport(Protocol):
    """What the control cycle needs from the plant I/O."""

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def read(self, snap: Snapshot, deadline: float | None = None) -> None:
        """Fill ``snap`` in place by ``deadline``. Never raises for comms faults: marks
        values NO_DATA/BAD."""

    async def write(self, plan: WritePlan, values: Sequence[float], deadline: float | None = None) -> None:
        """Write one value per planned tag (engineering units) by ``deadline``. Raises
        TransportError; WriteError says per tag what happened."""

    def health(self) -> dict[str, LinkHealth]: ...
