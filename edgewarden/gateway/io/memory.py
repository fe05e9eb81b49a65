"""In-memory transport: the plant as a dict, for unit tests of the cycle and the safety layer.

It obeys the same rules as a real transport (writes are checked against the plan and
the tag ranges) and records every write so a test can assert what reached the "wire".
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from edgewarden.gateway.io.tags import Quality, Snapshot, TagMap
from edgewarden.gateway.io.transport import LinkHealth, WriteError, WritePlan, check_write


class MemoryTransport:
    def __init__(self, tags: TagMap, values: dict[str, float] | None = None) -> None:
        self.tags = tags
        self.values: dict[str, float] = dict(values or {})
        self.quality: dict[str, Quality] = {}
        self.writes: list[dict[str, float]] = []
        self.online = True
        self.fail_writes = False
        self._health = LinkHealth(connected=True)

    async def connect(self) -> None:
        self._health.connected = True

    async def close(self) -> None:
        self._health.connected = False

    def health(self) -> dict[str, LinkHealth]:
        return {"memory": self._health}

    async def read(self, snap: Snapshot, deadline: float | None = None) -> None:
        now = time.monotonic()
        if not self.online:
            snap.mark(slice(None), Quality.NO_DATA)
            return
        wall = time.time()
        for name, slot in self.tags.index.items():
            value = self.values.get(name)
            if value is None:
                snap.values[slot] = math.nan
                snap.quality[slot] = Quality.NO_DATA
                continue
            snap.values[slot] = value
            snap.quality[slot] = self.quality.get(name, Quality.GOOD)
            snap.source_ts[slot] = wall
            snap.recv_mono[slot] = now
        self._health.last_ok_mono = now

    async def write(self, plan: WritePlan, values: Sequence[float], deadline: float | None = None) -> None:
        check_write(plan, values)
        if self.fail_writes or not self.online:  # sent, and the "device" refused it
            raise WriteError("memory transport: write failed (injected)", ["failed: injected"] * len(plan.names))
        record = dict(zip(plan.names, (float(v) for v in values), strict=True))
        self.writes.append(record)
        self.values.update(record)
