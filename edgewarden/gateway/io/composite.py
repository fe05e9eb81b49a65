"""One Transport over every configured connection, dispatching per connection type.

The control cycle sees a single transport. Reads go to every protocol transport
concurrently; a write plan is split once (cached) into one sub-plan per protocol, and the
sub-plans are written concurrently. Health is the union of every connection's health.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from edgewarden.gateway.errors import TransportError
from edgewarden.gateway.io.protocols import PROTOCOLS
from edgewarden.gateway.io.tags import Snapshot, TagMap
from edgewarden.gateway.io.transport import LinkHealth, Transport, WritePlan, check_write, merge_outcomes


class CompositeTransport:
    """The Transport the gateway runs: every protocol's connections side by side."""

    def __init__(self, tags: TagMap, connections: dict[str, Any], *, read_only: bool = False,
                 period_s: float | None = None) -> None:
        """``period_s``: the cycle's period (a link whose reads take more than half of it is
        slow: edgewarden/gateway/io/link.py)."""
        self.parts: list[Transport] = []
        self._owner: dict[str, Transport] = {}
        for kind, protocol in PROTOCOLS.items():  # one transport per protocol in use, from the table
            conns = {n: c for n, c in connections.items() if c.type == kind}
            if conns:
                part = protocol.transport(tags, conns, read_only=read_only, period_s=period_s)
                self.parts.append(part)
                self._owner.update(dict.fromkeys(conns, part))
        self._split: dict[tuple[str, ...], list[tuple[Transport, WritePlan, list[int]]]] = {}

    async def connect(self) -> None:
        results = await asyncio.gather(*(p.connect() for p in self.parts), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.close()
            raise errors[0]

    async def close(self) -> None:
        for part in self.parts:
            await part.close()

    def health(self) -> dict[str, LinkHealth]:
        out: dict[str, LinkHealth] = {}
        for part in self.parts:
            out.update(part.health())
        return out

    async def read(self, snap: Snapshot, deadline: float | None = None) -> None:
        if len(self.parts) == 1:
            await self.parts[0].read(snap, deadline)
        else:
            await asyncio.gather(*(p.read(snap, deadline) for p in self.parts))

    def _plan(self, plan: WritePlan) -> list[tuple[Transport, WritePlan, list[int]]]:
        split = self._split.get(plan.names)
        if split is None:
            by_part: dict[int, tuple[Transport, list[int]]] = {}
            for i, spec in enumerate(plan.specs):
                part = self._owner.get(spec.connection)
                if part is None:
                    raise TransportError(f"tag {plan.names[i]!r}: no connection named {spec.connection!r}")
                by_part.setdefault(id(part), (part, []))[1].append(i)
            split = [(part, WritePlan(tuple(plan.names[i] for i in pos), tuple(plan.specs[i] for i in pos)), pos)
                     for part, pos in by_part.values()]
            self._split[plan.names] = split
        return split

    async def write(self, plan: WritePlan, values: Sequence[float], deadline: float | None = None) -> None:
        split = self._plan(plan)
        if len(split) == 1 and len(split[0][2]) == len(plan.names):
            await split[0][0].write(plan, values, deadline)  # one part: it checks the whole write itself
            return
        check_write(plan, values)  # refuse the whole write before any part reaches the wire
        results = await asyncio.gather(*(part.write(sub, [values[i] for i in pos], deadline)
                                         for part, sub, pos in split), return_exceptions=True)
        error = merge_outcomes(len(plan.names), [(pos, r) for (_, _, pos), r in zip(split, results, strict=True)])
        if error is not None:
            raise error
