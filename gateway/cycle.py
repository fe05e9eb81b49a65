"""The control cycle, top to bottom.

    tick on an absolute deadline
    → read a snapshot of every tag (values, quality, timestamps)
    → observation checks (quality, range/NaN, staleness, PLC e-stop, hard/soft limits)
    → comms-loss check (no good read for comms_timeout_ms)
    → mode gate (INHIBITED/READY: heartbeat only; ESTOP: safe outputs; AUTO: policy)
    → policy inference (ONNX)
    → action shield (finite, bounds, rate)
    → write actions + heartbeat
    → audit record (hand-off, never waits for disk)
    → metrics

A trip at any step goes through the e-stop, which writes the safe outputs at once.
Deadline overruns are counted; ``max_consecutive_overruns`` in a row trip the e-stop.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from gateway.config import Settings
from gateway.errors import PolicyError, TransportError
from gateway.io.tags import Snapshot, TagMap
from gateway.io.transport import Transport, WritePlan, plan_writes
from gateway.modes import WRITING, Mode, ModeMachine, ModeRefused
from gateway.ops.metrics import Metrics
from gateway.safety.checker import ObservationChecker, Status
from gateway.safety.estop import EStop, TripEvent
from gateway.safety.shield import ActionShield

HEARTBEAT_MODULO = 2**32


class Policy(Protocol):
    sha256: str

    def infer(self, obs: np.ndarray) -> np.ndarray: ...


class AuditSink(Protocol):
    def append(self, kind: str, payload: dict) -> int: ...


@dataclass
class CycleStats:
    cycles: int = 0
    deadline_misses: int = 0
    consecutive_overruns: int = 0
    holds: int = 0
    shield_interventions: int = 0
    write_errors: int = 0
    last_cycle_s: float = math.nan
    max_cycle_s: float = 0.0
    max_lateness_s: float = 0.0


class ControlLoop:
    """One plant, one policy, one cycle. Built by gateway.app; runs until ``stop`` is set."""

    def __init__(self, settings: Settings, tags: TagMap, transport: Transport, policy: Policy,
                 modes: ModeMachine, audit: AuditSink, metrics: Metrics) -> None:
        self.settings = settings
        self.tags = tags
        self.transport = transport
        self.policy = policy
        self.modes = modes
        self.audit = audit
        self.metrics = metrics
        self.period = 1.0 / settings.gateway.cycle_hz
        self.checker = ObservationChecker(settings, tags)
        self.shield = ActionShield(settings)
        self.snap = Snapshot(len(tags.readable))
        self.stats = CycleStats()

        p = settings.policy
        self._obs_slots = tags.indices(p.observations)
        self._act_slots = tags.indices(p.actions)
        self._obs64 = np.zeros(len(p.observations))
        self._obs = np.zeros(len(p.observations), dtype=np.float32)
        self._proposed = np.zeros(len(p.actions))
        self._action = self.shield.safe.copy()  # last written (or to be written) action
        self._out = np.zeros(len(p.actions))
        self._write_plan: WritePlan = plan_writes(tags.specs, [*p.actions, settings.safety.heartbeat_tag])
        self._heartbeat_plan: WritePlan = plan_writes(tags.specs, [settings.safety.heartbeat_tag])
        self._values = [0.0] * len(self._write_plan.names)
        self._heartbeat = 0
        self._started_mono = time.monotonic()
        self._comms_timeout_s = settings.gateway.comms_timeout_ms / 1000.0
        self._start_requested = settings.gateway.auto_start
        self._last_code = "ok"

        self.estop = EStop(modes, [
            ("write_safe", self.write_safe),
            ("metrics", self._count_trip),
        ])

    # ---- operator commands (called from the control socket, same event loop) -----
    def request_start(self, actor: str) -> None:
        """Start is honoured from READY only."""
        if self.modes.mode != Mode.READY:
            raise ModeRefused(f"start refused: the gateway is {self.modes.mode.name}, start needs READY")
        self.modes.request(Mode.AUTO, reason="operator start", actor=actor)

    def request_reset(self, actor: str) -> None:
        """Reset leaves ESTOP for INHIBITED, only when the trip conditions have cleared."""
        if self.modes.mode != Mode.ESTOP:
            raise ModeRefused(f"reset refused: the gateway is {self.modes.mode.name}, not ESTOP")
        verdict = self.checker.verdict
        if verdict.status == Status.TRIP:
            raise ModeRefused(f"reset refused: the trip condition is still present ({verdict.message})")
        self._start_requested = False
        self.modes.request(Mode.INHIBITED, reason="operator reset", actor=actor)

    # ---- the loop -----------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        period = self.period
        busy_s = self.settings.gateway.busy_wait_us / 1e6
        deadline = loop.time() + period
        while not stop.is_set():
            await self._sleep_until(loop, deadline, busy_s)
            lateness = loop.time() - deadline
            t0 = time.perf_counter()
            await self.step()
            work = time.perf_counter() - t0
            self._account(work, lateness)
            deadline += period
            now = loop.time()
            if now > deadline:  # overran: the next tick has already passed
                missed = math.floor((now - deadline) / period) + 1
                deadline += missed * period
                self.stats.deadline_misses += 1
                self.stats.consecutive_overruns += 1
                self.metrics.deadline_misses.inc()
                if self.stats.consecutive_overruns >= self.settings.gateway.max_consecutive_overruns:
                    await self.estop.trip("deadline_overrun", f"{self.stats.consecutive_overruns} "
                                          f"consecutive cycles overran the {period * 1000:.1f} ms period")
            else:
                self.stats.consecutive_overruns = 0

    @staticmethod
    async def _sleep_until(loop: asyncio.AbstractEventLoop, deadline: float, busy_s: float) -> None:
        delay = deadline - loop.time() - busy_s
        if delay > 0:
            await asyncio.sleep(delay)
        while busy_s and loop.time() < deadline:
            pass

    async def step(self) -> None:
        """One control cycle."""
        snap = self.snap
        now = time.monotonic()

        # 1. read
        await self.transport.read(snap)

        # 2. observation checks
        verdict = self.checker.check(snap, now)
        if verdict.status == Status.TRIP:
            await self.estop.trip(verdict.code, verdict.message)

        # 3. comms loss past its timeout trips
        if self._comms_lost(now):
            await self.estop.trip("comms_loss", f"no good read from the PLC for more than "
                                  f"{self._comms_timeout_s * 1000:.0f} ms")

        # 4. mode gate
        mode = self.modes.mode
        written: np.ndarray | None = None
        proposed: np.ndarray | None = None
        if mode == Mode.ESTOP:
            written = self.shield.safe
            await self._write(written)
        elif mode in (Mode.INHIBITED, Mode.READY):
            self._gate_readiness(verdict.status)
            await self._write_heartbeat()
        elif mode in WRITING and verdict.status == Status.HOLD:
            self.stats.holds += 1  # data not usable this cycle: hold the last action
            await self._write_heartbeat()
        elif mode in WRITING:
            # 5. policy inference
            np.take(snap.values, self._obs_slots, out=self._obs64)
            np.copyto(self._obs, self._obs64, casting="same_kind")
            try:
                proposed = self._proposed
                proposed[:] = self.policy.infer(self._obs)
            except PolicyError as exc:
                await self.estop.trip("policy_fault", str(exc))
                proposed = None
            if proposed is not None:
                # 6. action shield
                res = self.shield.apply(proposed, self._action, self.period, self._out)
                if not res.ok:
                    await self.estop.trip(res.code, "the policy proposed a non-finite action")
                else:
                    if res.code != "ok":
                        self.stats.shield_interventions += 1
                        self.metrics.shield_interventions.inc()
                    # 7. write actions + heartbeat
                    self._action[:] = self._out
                    written = self._action
                    await self._write(written)
        else:  # MANUAL: monitor and log, write nothing but the heartbeat
            await self._write_heartbeat()

        # 8. audit (hand-off to the writer thread)
        self.audit.append("cycle", {
            "n": self.stats.cycles,
            "mode": self.modes.mode.name,
            "obs": self._obs_record(),
            "verdict": verdict.code,
            "proposed": None if proposed is None else proposed.tolist(),
            "written": None if written is None else written.tolist(),
            "hb": self._heartbeat,
        })

        # 9. metrics
        if verdict.code != self._last_code and verdict.code.startswith("soft_limit"):
            self.metrics.soft_alarms.inc()
        self._last_code = verdict.code

    @property
    def action(self) -> np.ndarray:
        """The last action written (or, in ESTOP, the safe outputs)."""
        return self._action

    # ---- helpers --------------------------------------------------------------------
    def _obs_record(self) -> list[float | None]:
        values = self.snap.values[self._obs_slots]
        return [None if not math.isfinite(v) else v for v in values.tolist()]

    def _comms_lost(self, now: float) -> bool:
        for health in self.transport.health().values():
            last = health.last_ok_mono
            since = now - (last if math.isfinite(last) else self._started_mono)
            if since > self._comms_timeout_s:
                return True
        return False

    def _gate_readiness(self, status: Status) -> None:
        if self.modes.mode == Mode.INHIBITED and status == Status.OK:
            self._seed_bumpless()
            self.modes.request(Mode.READY, reason="plant healthy, policy loaded", actor="gateway")
        elif self.modes.mode == Mode.READY and status != Status.OK:
            self.modes.request(Mode.INHIBITED, reason=f"plant not healthy: {self.checker.verdict.message}",
                               actor="gateway")
        elif self.modes.mode == Mode.READY and self._start_requested:
            self._start_requested = False
            self.modes.request(Mode.AUTO, reason="auto_start", actor="gateway")

    def _seed_bumpless(self) -> None:
        """Start rate limiting from the setpoints the PLC holds now, where they read good."""
        applied = self.snap.values[self._act_slots]
        good = np.isfinite(applied) & (self.snap.quality[self._act_slots] == 0)
        self._action[:] = np.where(good, np.clip(applied, self.shield.lo, self.shield.hi), self.shield.safe)

    def _next_heartbeat(self) -> float:
        self._heartbeat = (self._heartbeat + 1) % HEARTBEAT_MODULO
        return float(self._heartbeat)

    async def _write(self, action: np.ndarray) -> None:
        values = self._values
        values[:-1] = action.tolist()
        values[-1] = self._next_heartbeat()
        try:
            await self.transport.write(self._write_plan, values)
        except TransportError:
            self.stats.write_errors += 1  # comms loss past its timeout trips in step 3

    async def _write_heartbeat(self) -> None:
        try:
            await self.transport.write(self._heartbeat_plan, (self._next_heartbeat(),))
        except TransportError:
            self.stats.write_errors += 1

    async def write_safe(self, event: TripEvent) -> None:
        """The e-stop's first handler: safe outputs plus heartbeat, straight to the transport."""
        self._action[:] = self.shield.safe
        await self.transport.write(self._write_plan, [*self.shield.safe.tolist(), self._next_heartbeat()])

    async def _count_trip(self, event: TripEvent) -> None:
        self.metrics.trips.labels(reason=event.code.split(":")[0]).inc()

    def _account(self, work: float, lateness: float) -> None:
        s = self.stats
        s.cycles += 1
        s.last_cycle_s = work
        s.max_cycle_s = max(s.max_cycle_s, work)
        s.max_lateness_s = max(s.max_lateness_s, lateness)
        m = self.metrics
        m.cycles.inc()
        m.cycle_seconds.observe(work)
        m.lateness_seconds.observe(max(lateness, 0.0))
