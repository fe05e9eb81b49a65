"""The cycle's write stage: actions plus heartbeat (or the heartbeat alone) to the
transport, each write bounded by its deadline, its outcome recorded per tag.

``write_ack = "in_cycle"``: the cycle waits for the device's acknowledgement (until its
write deadline). ``"next_cycle"``: the request is sent now, just as early, and the
acknowledgement arrives while the cycle sleeps; :meth:`Outputs.settle` collects it at the
start of the next cycle (a failure counts there, one cycle later, and that cycle's record
carries it as ``prev_ack``). At most one write is in flight, in cycle order, and the
e-stop's safe write always goes after it: the safe outputs are the last word.

An outcome per planned tag is ``"ok"`` (acknowledged), ``"failed: …"``, ``"timeout"`` or
``"not_attempted: …"``; a comms fault is never an exception here (comms loss past its
timeout trips in the cycle).

The heartbeat vouches for the outputs. In ESTOP the safe outputs are written first, alone,
and the heartbeat only once the device has acknowledged them: a PLC that refuses or never
answers the safe write gets no heartbeat either, so its own dead-man takes over
(``vouching`` is False until a safe write is acknowledged again).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from edgewarden.gateway.config import Settings
from edgewarden.gateway.errors import TransportError
from edgewarden.gateway.io.link import SLOW_SHARE
from edgewarden.gateway.io.tags import TagMap
from edgewarden.gateway.io.transport import Transport, WriteError, WritePlan, plan_writes

HEARTBEAT_MODULO = 2**32
_STILL_IN_FLIGHT = "not_attempted: the previous write is still in flight"


class WriteCounter(Protocol):
    write_errors: int


class Outputs:
    """Owns the write plans, the heartbeat counter and the acknowledgement bookkeeping."""

    def __init__(self, settings: Settings, tags: TagMap, transport: Transport, counter: WriteCounter) -> None:
        p, safety = settings.policy, settings.safety
        self._transport = transport
        self._counter = counter
        self._plan: WritePlan = plan_writes(tags.specs, [*p.actions, safety.heartbeat_tag])
        self._hb_plan: WritePlan = plan_writes(tags.specs, [safety.heartbeat_tag])
        self._safe_plan: WritePlan = plan_writes(tags.specs, list(p.actions))
        self._values = [0.0] * len(self._plan.names)
        self._ok = {plan.names: ["ok"] * len(plan.names) for plan in (self._plan, self._hb_plan, self._safe_plan)}
        self._ack_next = settings.gateway.write_ack == "next_cycle"
        self._period = 1.0 / settings.gateway.cycle_hz  # how late a write may be answered
        # [policy] kind = "monitor": nothing at all goes to the plant, not even the heartbeat
        self.writes = settings.policy.kind != "monitor"
        self._inflight: asyncio.Future[list[str]] | None = None
        self.heartbeat = 0
        self._hb_this_cycle: int | None = None
        self.vouching = True  # False: a safe write went unacknowledged, the heartbeat is stopped
        self.ack: list[str] | str | None = None  # this cycle's write outcome, per planned tag
        self.prev_ack: list[str] | None = None  # write_ack = "next_cycle": the last cycle's, once
        self.failed = False  # a write of this cycle (or the one settled in it) failed
        self.acked_mono = time.monotonic()  # the last write the device acknowledged
        self.deadline = math.inf  # this cycle's write deadline (time.monotonic())
        self.seconds = 0.0  # the write stage's time this cycle, settling included
        self._settle_s = 0.0
        self._rtt_s = math.nan  # the last acknowledged write's round trip

    @property
    def heartbeat_sent(self) -> int | None:
        """The heartbeat this cycle sent (None: none, or its write was never attempted)."""
        ack = self.ack
        if self._hb_this_cycle is None or (isinstance(ack, list) and ack[-1].startswith("not_attempted")):
            return None
        return self._hb_this_cycle

    async def begin_cycle(self) -> None:
        """Start of a cycle: a write answered since is collected (its outcome is this
        cycle's ``prev_ack``); one still in flight is left to its own deadline."""
        self._hb_this_cycle = None
        self.failed = False
        self._settle_s = 0.0
        self.ack = None
        if self._ack_next:
            await self.settle()  # sent last cycle, bounded by that cycle's deadline: answered by now
        else:
            self._collect()

    def _collect(self) -> None:
        inflight = self._inflight
        if inflight is not None and inflight.done():
            self._inflight = None
            self.prev_ack = inflight.result()  # a bug in the write goes on up, to the fail-safe boundary

    def take_prev_ack(self) -> list[str] | None:
        prev, self.prev_ack = self.prev_ack, None
        return prev

    async def write(self, action: np.ndarray) -> None:
        """The action and the next heartbeat."""
        if not self.writes:
            return
        values = self._values
        values[:-1] = action.tolist()
        values[-1] = self._next_heartbeat()
        await self._send(self._plan, values)

    async def write_heartbeat(self) -> None:
        if self.writes:
            await self._send(self._hb_plan, (self._next_heartbeat(),))

    async def write_safe(self, safe: list[float], deadline: float) -> dict[str, object] | None:
        """The safe outputs, after the write in flight; then the heartbeat, only if the
        device acknowledged them (else it stops: the PLC's dead-man takes over). What was
        written and acknowledged, one outcome per action and the heartbeat, for the record
        (None: monitor, nothing written). Also this cycle's ``ack``."""
        if not self.writes:
            return None
        t_write = time.perf_counter()
        await self.settle()
        self.vouching = False  # until the device acknowledges them (an exception leaves it so)
        ack = await self._checked(self._safe_plan, safe, deadline)
        if all(a == "ok" for a in ack):
            self.vouching = True
            hb: int | None = int(self._next_heartbeat())
            ack = [*ack, *await self._checked(self._hb_plan, (float(hb),), deadline)]
        else:
            hb = None
            ack = [*ack, "not_attempted: the safe outputs were not acknowledged (heartbeat stopped)"]
        self.ack = ack
        self.seconds = time.perf_counter() - t_write + self._settle_s
        return {"written": safe, "hb": hb, "ack": ack}

    async def settle(self) -> None:
        """Wait for the write still in flight, if any (``write_ack = "next_cycle"``, or an
        ``in_cycle`` write pipelined past its deadline; bounded by its own deadline): at
        the next cycle (next_cycle), before the safe write, and before the transport closes."""
        inflight = self._inflight
        if inflight is not None:
            self._inflight = None
            t0 = time.perf_counter()
            self.prev_ack = await inflight  # bounded: the write had its own deadline
            self._settle_s += time.perf_counter() - t0

    def _next_heartbeat(self) -> float:
        self.heartbeat = self._hb_this_cycle = (self.heartbeat + 1) % HEARTBEAT_MODULO
        return float(self.heartbeat)

    async def _send(self, plan: WritePlan, values: Sequence[float]) -> None:
        """One write. ``in_cycle``: waited for until the cycle's write deadline, and pipelined
        past it: answered up to one period later, its outcome is a later cycle's
        ``prev_ack``; while it is in flight, a cycle's write is not sent (the next carries
        newer values). On a slow link (the last write's round trip more than half a period) a
        write whose answer cannot come before the deadline is pipelined at once: waiting
        it out would only take the cycle's slack. ``next_cycle``: sent, collected at the
        next cycle's start. At most
        one write is in flight, in cycle order."""
        t_write = time.perf_counter()
        if self._ack_next:
            await self.settle()  # at most one write in flight, in cycle order
            self._inflight = asyncio.ensure_future(self._checked(plan, tuple(values), self.deadline))
            self.ack = "sent"
            await asyncio.sleep(0)  # runs the write up to its send: the request leaves now
        else:
            self._collect()
            if self._inflight is not None:
                self.ack = [_STILL_IN_FLIGHT] * len(plan.names)
            else:
                write = asyncio.ensure_future(self._checked(plan, tuple(values), self.deadline + self._period))
                left = self.deadline - time.monotonic()
                # a slow link's write (its last round trip more than half a period) is waited
                # for only while its answer can still come in time
                if not (self._rtt_s > left and self._rtt_s > SLOW_SHARE * self._period):
                    await asyncio.wait((write,), timeout=max(0.0, left))
                if write.done():
                    self.ack = write.result()
                else:  # answered later (within a period): its outcome is a later cycle's prev_ack
                    self._inflight, self.ack = write, "sent"
        self.seconds = time.perf_counter() - t_write + self._settle_s

    async def _checked(self, plan: WritePlan, values: Sequence[float], deadline: float) -> list[str]:
        t0 = time.monotonic()
        try:
            await self._transport.write(plan, values, deadline)
        except TransportError as exc:
            self.failed = True
            self._counter.write_errors += 1  # comms loss past its timeout trips in the cycle
            if isinstance(exc, WriteError):
                return exc.outcomes
            return [f"not_attempted: {exc}"] * len(plan.names)  # refused before anything was sent
        self.acked_mono = now = time.monotonic()
        self._rtt_s = now - t0
        return self._ok[plan.names]
