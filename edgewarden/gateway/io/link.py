"""What every protocol's connection does alike: health, dropping a failed client,
reconnecting in the background with capped exponential backoff and jitter, telling a late
answer from a dead peer, and closing.

A transport keeps one :class:`Link` per configured connection and derives from
:class:`LinkedTransport`, which supplies everything here, and the cycle's fan-out: every
link read concurrently, a write plan split once per link (cached) and the parts written
concurrently with one outcome per tag. The protocol supplies how to open a client
(``_open``), how to let one go (``_dispose``), how to read one link (``_read_link``), how
to split a plan (``_plan``) and how to write one part (``_write_part``).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from edgewarden.gateway.errors import GatewayError, TransportError
from edgewarden.gateway.io.tags import Quality, Snapshot
from edgewarden.gateway.io.transport import LinkHealth, WritePlan, check_write, merge_outcomes
from edgewarden.gateway.logs import get_logger


def describe(exc: BaseException) -> str:
    """An exception as one line for a status or a log."""
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]


@dataclass(kw_only=True)
class Link:
    """One connection: its client and health (protocols add their own fields)."""

    name: str
    spec: Any  # the connection's model (reconnect_min_s, reconnect_max_s, peer())
    client: Any = None
    health: LinkHealth = field(default_factory=LinkHealth)
    reconnect_task: asyncio.Task[None] | None = None
    backoff_s: float = 0.0  # next reconnect wait; back to reconnect_min_s only after a good read
    answered_mono: float = -float("inf")  # the peer's last answer (or the session's start)
    broken: list[Any] = field(default_factory=list)  # dropped clients still to let go
    refusal_logged: str = ""  # the write refusal last logged (logged once while it repeats)
    # overlapping reads: the read in flight (it may outlive its cycle), the snapshot it
    # fills (private to the link until it completes) and the link's slots in both
    reading: asyncio.Future[None] | None = None
    reading_late: int = 0  # cycle deadlines the read in flight has missed
    read_s: float = float("nan")  # how long the last answered read took (all its requests)
    read_sent: float = 0.0  # when the read in flight was asked (time.monotonic())
    buf: Snapshot | None = None
    slots: slice | np.ndarray = field(default_factory=lambda: slice(0, 0))

    @property
    def silence_s(self) -> float:
        """How long the peer may answer nothing before the link is dropped."""
        return float(self.spec.timeout_s)

    def opened(self, client: Any) -> None:
        """Connected (again). ``last_error`` stays until a clean read: a peer that answers
        every session out of shape keeps its fault named (in a comms_loss trip too)."""
        self.client = client
        self.answered_mono = time.monotonic()
        self.health.connected = True
        self.health.state = "up"

    def answered(self, now: float, *, clean: bool = True) -> None:
        """A good answer: the peer is alive and the backoff starts from the minimum again;
        ``clean`` (every value of the read good): what went wrong before is over."""
        self.answered_mono = now
        self.health.last_ok_mono = now
        self.backoff_s = 0.0
        if clean and self.health.last_error != self.refusal_logged:  # a write refusal stays until a write is taken
            self.health.last_error = ""


L = TypeVar("L", bound=Link)
READ_LATE_CYCLES = 2  # a read that misses this many cycle deadlines is abandoned and asked again
SLOW_SHARE = 0.5  # a link whose last read took more than this share of the period is slow


@dataclass(frozen=True)
class WritePart:
    """The share of a write plan that goes to one link: its tags' positions in the plan,
    and what the protocol prepared for them (node ids, register runs)."""

    link: Any
    positions: list[int]
    prepared: Any


class LinkedTransport(Generic[L]):
    """The shared half of a protocol transport; see the module's docstring."""

    # exceptions that mean "the link failed" (anything else is a bug and propagates)
    comms_errors: tuple[type[BaseException], ...] = (OSError, TimeoutError, ConnectionError)

    def __init__(self, log_name: str, *, read_only: bool = False, period_s: float | None = None) -> None:
        """``read_only``: a gateway that writes nothing ([policy] kind = "monitor"): every
        write is refused here too, and no write access is asked of the server.
        ``period_s``: the cycle's period; a link whose last read took more than half of it
        is slow, and the cycle waits for its read only while the answer can come in time
        (None: always waits up to the deadline)."""
        self.read_only = read_only
        self._slow_s = math.inf if period_s is None else SLOW_SHARE * period_s
        self._links: dict[str, L] = {}
        self._write_cache: dict[tuple[str, ...], list[WritePart]] = {}
        self._closing = False
        self._log = get_logger(log_name)

    async def _open(self, link: L) -> None:
        """Open a client for ``link`` and hand it to ``link.opened``; raise on failure."""
        raise NotImplementedError

    async def _dispose(self, client: Any) -> None:
        """Let a client go, quietly and within a bounded time."""
        raise NotImplementedError

    def _plan(self, plan: WritePlan) -> list[WritePart]:
        """Split a plan into one part per link (refusing what this protocol cannot write)."""
        raise NotImplementedError

    async def _read_link(self, link: L, snap: Snapshot, deadline: float | None) -> None:
        raise NotImplementedError

    async def _write_part(self, part: WritePart, plan: WritePlan, values: Sequence[float],
                          deadline: float | None) -> None:
        """Write one part; WriteError with outcomes for the whole plan when not all acknowledged."""
        raise NotImplementedError

    def health(self) -> dict[str, LinkHealth]:
        return {name: link.health for name, link in self._links.items()}

    def _overlap(self, link: L, n: int, slots: slice | np.ndarray) -> None:
        """Give ``link`` its private snapshot (``n`` slots, as the cycle's) and its slots in it."""
        link.buf, link.slots = Snapshot(n), slots

    async def read(self, snap: Snapshot, deadline: float | None = None) -> None:
        links = self._links
        if len(links) == 1:
            await self._read_overlapped(next(iter(links.values())), snap, deadline)
        else:
            await asyncio.gather(*(self._read_overlapped(link, snap, deadline) for link in links.values()))

    async def _read_overlapped(self, link: L, snap: Snapshot, deadline: float | None) -> None:
        """One link's read, overlapping cycles: the request is bounded by the link's own
        timeout, not the cycle's deadline. Answered by the deadline, its values go into the
        snapshot; not yet, the link's slots keep the newest answered values with their
        receive times (the checks judge their age: stale data holds, then trips) and the
        read goes on, to be taken by the next cycle; missing that one's deadline too, and in
        flight twice as long as the last read took, it is abandoned (NO_DATA) and asked
        again. A read answered since the last cycle is taken at once and the next asked. On
        a slow link (its last read took more than half a period) the cycle waits for that
        one only while its answer can still come in time; a slow link so runs a read
        behind, on its newest data, without taking the cycle's slack, and a lost answer
        costs two cycles (or two of its reads), not the link's timeout."""
        buf = link.buf
        if buf is None:  # a transport built without overlapping (tests of the protocol's own read)
            await self._read_link(link, snap, deadline)
            return
        reading = link.reading
        if reading is not None and reading.done():  # answered after an earlier cycle's deadline
            self._take(link, reading, snap)
            reading = None
        if reading is None:
            reading = link.reading = asyncio.ensure_future(self._timed_read(link, buf))
            link.reading_late, link.read_sent = 0, time.monotonic()
        if not reading.done():
            if deadline is None:
                await asyncio.wait((reading,))
            else:
                left = deadline - time.monotonic()
                # a slow link's read is waited for only while its answer can still come in
                # time (its last read took less than what is left); otherwise the cycle runs
                # a read behind at once. Only a slow one: a fast link's read that merely
                # started late is waited for, or its answer would be taken in the next
                # cycle's sleep and make that one late in turn.
                if left > 0 and not (link.read_s > left and link.read_s > self._slow_s):
                    await asyncio.wait((reading,), timeout=left)
            if not reading.done():
                link.health.late += 1
                link.reading_late += 1
                if link.reading_late < READ_LATE_CYCLES or time.monotonic() - link.read_sent <= 2 * link.read_s:
                    return
                # late past the next cycle too, and twice as long as the last read took: a
                # lost answer more likely than a slow one; abandoned (NO_DATA) and asked again
                # next cycle, the link kept until its own timeout of silence
                reading.cancel()
                await asyncio.gather(reading, return_exceptions=True)
                link.reading = None
                self._read_failed(link, snap, link.slots, TimeoutError("no answer for two cycles"))
                return
        self._take(link, reading, snap)

    async def _timed_read(self, link: L, buf: Snapshot) -> None:
        t0 = time.monotonic()
        await self._read_link(link, buf, None)
        link.read_s = time.monotonic() - t0

    @staticmethod
    def _take(link: L, reading: asyncio.Future[None], snap: Snapshot) -> None:
        """An answered read: the link's values into the snapshot."""
        link.reading = None
        reading.result()  # a bug in the read goes on up, to the cycle's fail-safe boundary
        buf = link.buf
        assert buf is not None
        idx = link.slots
        snap.values[idx] = buf.values[idx]
        snap.quality[idx] = buf.quality[idx]
        snap.source_ts[idx] = buf.source_ts[idx]
        snap.recv_mono[idx] = buf.recv_mono[idx]

    async def write(self, plan: WritePlan, values: Sequence[float], deadline: float | None = None) -> None:
        if self.read_only:
            raise TransportError("read-only transport ([policy] kind = \"monitor\"): nothing is written")
        check_write(plan, values)
        parts = self._write_cache.get(plan.names)
        if parts is None:
            parts = self._write_cache[plan.names] = self._plan(plan)
        if len(parts) == 1:
            await self._write_part(parts[0], plan, values, deadline)
            self._taken(parts[0].link)
            return
        results = await asyncio.gather(*(self._write_part(p, plan, values, deadline) for p in parts),
                                       return_exceptions=True)
        for part, res in zip(parts, results, strict=True):
            if res is None:
                self._taken(part.link)
        error = merge_outcomes(len(plan.names), [(p.positions, r) for p, r in zip(parts, results, strict=True)])
        if error is not None:
            raise error

    @staticmethod
    def _taken(link: L) -> None:
        """A write acknowledged in full: a refusal named before is over (and logged again
        should it come back)."""
        if link.refusal_logged:
            if link.health.last_error == link.refusal_logged:
                link.health.last_error = ""
            link.refusal_logged = ""

    def _drop(self, link: L, exc: BaseException) -> None:
        """The link failed: mark it, set the client aside (let go by the reconnect task, so
        the cycle never waits on it) and reconnect in the background."""
        if link.health.connected and not self._closing:  # once per transition, not per failed attempt
            self._log.error("link down", link=link.name, peer=link.spec.peer(), error=describe(exc))
        link.health.connected = False
        link.health.state = "closed" if self._closing else "reconnecting"
        link.health.last_error = describe(exc)
        client, link.client = link.client, None
        if client is not None:
            link.broken.append(client)
        if not self._closing and (link.reconnect_task is None or link.reconnect_task.done()):
            link.reconnect_task = asyncio.create_task(self._reconnect(link), name=f"reconnect-{link.name}")

    def _read_failed(self, link: L, snap: Snapshot, slots: np.ndarray, exc: BaseException) -> None:
        """A read failed: the link's values are NO_DATA (never the last good
        value presented as fresh); a late answer keeps the link, a failure drops it."""
        snap.mark(slots, Quality.NO_DATA)
        if isinstance(exc, TimeoutError):
            self._late(link)
        else:
            self._drop(link, exc)

    def _refused(self, link: L, error: str) -> None:
        """The peer refused a write: shown in the link's health every time, logged once
        while the same refusal repeats (the writes go unacknowledged: comms loss trips in
        its budget)."""
        link.health.last_error = error
        if link.refusal_logged != error:
            link.refusal_logged = error
            self._log.error("write refused", link=link.name, peer=link.spec.peer(), error=error)

    def _late(self, link: L) -> None:
        """No answer by the cycle's deadline: keep the link unless the peer has answered
        nothing for its own timeout (then drop it and reconnect)."""
        if time.monotonic() - link.answered_mono >= link.silence_s:
            self._drop(link, TimeoutError(f"no answer for {link.silence_s:g} s"))
        else:
            link.health.late += 1
            link.health.last_error = "no answer by the cycle's deadline"

    async def _let_go(self, link: L) -> None:
        while link.broken:
            await self._dispose(link.broken.pop())

    async def _reconnect(self, link: L) -> None:
        # A peer that accepts the connection but never answers would otherwise reconnect
        # at the minimum delay forever: the backoff only resets after a good answer.
        await self._let_go(link)
        delay = max(link.backoff_s, link.spec.reconnect_min_s)
        while not self._closing:
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2.0, link.spec.reconnect_max_s)
            link.backoff_s = delay
            try:
                await self._open(link)
            except (*self.comms_errors, GatewayError) as exc:  # a refusal too: it may be fixed outside
                link.health.last_error = describe(exc)
                continue
            except Exception as exc:  # noqa: BLE001 - a peer whose handshake a library cannot decode
                link.health.last_error = f"protocol fault at connect ({type(exc).__name__}: {describe(exc)})"
                continue
            link.health.reconnects += 1
            self._log.warning("link up", link=link.name, peer=link.spec.peer(), reconnects=link.health.reconnects)
            return

    async def close(self) -> None:
        self._closing = True
        for link in self._links.values():
            if link.reading is not None:
                link.reading.cancel()
                await asyncio.gather(link.reading, return_exceptions=True)
                link.reading = None
            if link.reconnect_task is not None:
                link.reconnect_task.cancel()
                await asyncio.gather(link.reconnect_task, return_exceptions=True)
            if link.client is not None:
                link.broken.append(link.client)
                link.client = None
            await self._let_go(link)
            link.health.connected = False
            link.health.state = "closed"
