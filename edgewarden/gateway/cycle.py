"""The control cycle, top to bottom.

    tick on an absolute deadline
    → read a snapshot of every tag (values, quality, timestamps)
    → observation checks (quality, range/NaN, staleness, rate of change, PLC e-stop,
      hard/soft limits)                                              TRIP → e-stop
    → comms-loss check (no good read nor acknowledged write)          TRIP → e-stop
    → human override (PLC hand/auto tag, operator command)            → MANUAL
    → PLC authority (remote/watchdog tags): not accepting in AUTO       → MANUAL
    → interlocks: this cycle's effective action bounds
    → staged model swap (validated before; swapped only here, between cycles)
    → mode gate
        ESTOP                safe outputs; the heartbeat once they are acknowledged
        INHIBITED / READY    heartbeat only (READY when healthy; AUTO on start)
        MANUAL               track the applied outputs; operator setpoints (if any) → shield
        AUTO / FALLBACK      policy inference (ONNX); fault / out-of-distribution input /
                             repeated interventions → FALLBACK (Simplex); FALLBACK hands
                             back after agreement_s of agreement; a shadow model runs
                             beside the active one, audited, never written; a learned
                             policy's proposal is held to the authority band around the
                             incumbent's (edgewarden/gateway/safety/trust.py); an operator's
                             excitation adds its offsets, in plain AUTO only
                             (edgewarden/gateway/policy/excitation.py)
    → action shield (finite, bounds ∩ interlocks, rate)      no feasible action → e-stop
    → write actions + heartbeat
    → written setpoints against the applied tags (a persistent mismatch: alarm)
    → audit record (hand-off, never waits for disk)
    → garbage collection, with ``gc = "between_cycles"`` (never inside the steps above)
    → metrics, and the "healthy cycle" notification (systemd watchdog); at most every
      push interval, the registry rendered for the exporter process (ops/exporter.py)

A trip at any step goes through the e-stop, which writes the safe outputs at once.
The fail-safe boundary: any exception that escapes a step (anticipated or not: a reply of
the wrong shape, a bug) trips the same e-stop as ``internal_fault:<step>:<type>``; the
daemon stays up, latched (edgewarden/gateway/safety/fault.py).
Deadline overruns are counted; ``max_consecutive_overruns`` in a row, or overruns that
last longer than ``comms_timeout_ms``, trip the e-stop.

Time budget: the read is given until 0.8 of a period after the cycle's tick, the write
until 0.9 of a period (at least 0.1 of a period after it starts; the e-stop's safe write a
whole period), whatever a library's request timeout says; on a slow link (its last answer
took more than half a period) neither is waited for when that answer took longer than
what is left (edgewarden/gateway/io/link.py). A read not answered by then goes on (its
link keeps the newest answered values, whose age the checks judge) and a later cycle takes
its answer; a write not acknowledged by then is pipelined: answered up to a period later,
its outcome is a later cycle's ``prev_ack`` (edgewarden/gateway/outputs.py). So a hung or
slow link costs each cycle at most one period, and comms loss trips at the last check
before ``comms_timeout_ms`` of silence:
inside the documented budget of ``comms_timeout_ms`` plus one cycle, with a cycle to
spare for scheduling jitter.
The audit record says, per written tag, whether the device acknowledged the write.

Timing: deadlines lie on the ideal grid of ``time.perf_counter`` (edgewarden/gateway/pacing.py);
comms loss and held data are timed in edgewarden/gateway/safety/silence.py. Each stage stores its duration in
one reused list; the metrics stage at the end of the cycle feeds the Prometheus
histograms from it and, when configured, the timing trace (edgewarden/gateway/timing.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edgewarden.gateway.config import Settings
from edgewarden.gateway.errors import AuditError, PolicyError
from edgewarden.gateway.io.tags import Quality, Snapshot, TagMap
from edgewarden.gateway.io.transport import Transport
from edgewarden.gateway.logs import get_logger
from edgewarden.gateway.modes import WRITING, Mode, ModeMachine, ModeRefused
from edgewarden.gateway.ops.metrics import Metrics
from edgewarden.gateway.outputs import Outputs
from edgewarden.gateway.override import PLC_NOT_ACCEPTING, Override
from edgewarden.gateway.pacing import Pacer
from edgewarden.gateway.policy.excitation import Excitation
from edgewarden.gateway.policy.registry import ModelManager
from edgewarden.gateway.safety.authority import PlcAuthority
from edgewarden.gateway.safety.checker import ObservationChecker, Status, Verdict
from edgewarden.gateway.safety.estop import EStop, TripEvent
from edgewarden.gateway.safety.fault import internal_fault
from edgewarden.gateway.safety.interlocks import Interlocks
from edgewarden.gateway.safety.shield import ActionShield
from edgewarden.gateway.safety.silence import SilenceWatch
from edgewarden.gateway.safety.stack import SafetyStack, build_stack
from edgewarden.gateway.safety.supervisor import Screen
from edgewarden.gateway.timing import TRACE_FIELDS, CycleGc, CycleTrace, GcPauses

# columns of the per-cycle timing list (edgewarden.gateway.timing.TRACE_FIELDS)
_LATE, _READ, _CHECK, _INFER, _SHIELD, _WRITE, _AUDIT, _METRICS, _WORK, _GC = range(len(TRACE_FIELDS))
READ_SHARE = 0.8  # of the period: the read's deadline, counted from the cycle's start
WRITE_SHARE = 0.9  # of the period: the write's deadline, counted from the cycle's start ...
WRITE_MIN_SHARE = 0.1  # ... or from the write's own start, whichever is later
HEARTBEAT_STOPPED = "heartbeat_stopped"  # alarm: the safe outputs unacknowledged, no heartbeat sent


class Policy(Protocol):
    sha256: str
    contract: Any
    algorithm: str

    def attach(self, last_action: np.ndarray, observations: np.ndarray, period: float) -> None: ...

    def infer(self, obs: np.ndarray) -> np.ndarray: ...


class AuditSink(Protocol):
    def append(self, kind: str, payload: dict) -> int: ...

    def append_owned(self, kind: str, payload: dict) -> int: ...


@dataclass
class CycleStats:
    cycles: int = 0
    deadline_misses: int = 0
    consecutive_overruns: int = 0
    holds: int = 0
    shield_interventions: int = 0
    policy_faults: int = 0
    ood_inputs: int = 0
    write_errors: int = 0
    internal_faults: int = 0  # exceptions caught at the fail-safe boundary
    data_age_s: float = math.nan  # age of the oldest monitored value the last cycle used
    last_cycle_s: float = math.nan
    max_cycle_s: float = 0.0
    max_lateness_s: float = 0.0


class _Decision:
    """What one cycle decided (reused every cycle): the mode its outputs were written
    under, what was written and proposed, the model's uncertainty about its input, the
    shadow model's report, the write's ack, whether a band held the proposal."""

    __slots__ = ("ack", "band", "excite", "mode", "proposed", "shadow", "uncertainty", "written")

    def __init__(self) -> None:
        self.mode = Mode.INHIBITED
        self.written: np.ndarray | None = None
        self.proposed: np.ndarray | None = None
        self.shadow: dict[str, Any] | None = None
        self.uncertainty = math.nan  # NaN: no inference, or a model without the output
        self.band = False  # the learned policy's proposal was held to the authority band
        self.excite: np.ndarray | None = None  # the excitation's offsets added to the proposal
        self.ack: list[str] | str | None = None


class ControlLoop:
    """One plant, one policy, one cycle. Built by edgewarden.gateway.app; runs until ``stop`` is set."""

    def __init__(self, settings: Settings, tags: TagMap, transport: Transport, policy: Policy,
                 modes: ModeMachine, audit: AuditSink, metrics: Metrics,
                 on_healthy_cycle: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.tags = tags
        self.transport = transport
        self.policy = policy
        self.modes = modes
        self.audit = audit
        self.metrics = metrics
        self.on_healthy_cycle = on_healthy_cycle
        self.period = 1.0 / settings.gateway.cycle_hz
        gw = settings.gateway
        self.pacer = Pacer(self.period, gw.busy_wait_us / 1e6, gw.max_consecutive_overruns,
                           gw.comms_timeout_ms / 1000.0)
        self.models = ModelManager(settings, policy, audit)
        self.safety: SafetyStack = build_stack(settings, tags, policy, modes, self.models.on_trouble,
                                               self._authority_changed)
        metrics.authority(self.safety.trust.record(), self.safety.trust.applies)
        self.authority = PlcAuthority(settings, tags, self.checker.names)
        self.snap = Snapshot(len(tags.readable))
        self.stats = CycleStats()
        # this cycle's stage times (s, NaN = not run), observed in the metrics stage
        self._t = [math.nan] * len(TRACE_FIELDS)
        self._nans = [math.nan] * len(TRACE_FIELDS)
        self._observe = [(TRACE_FIELDS.index(name), child.observe) for name, child in metrics.stage.items()
                         if name != "metrics"]
        self._observe_metrics = metrics.stage["metrics"].observe
        self.trace = CycleTrace(gw.timing_trace_cycles) if gw.timing_trace is not None else None

        p, safety = settings.policy, settings.safety
        n_act = len(p.actions)
        self._obs_slots = tags.indices(p.observations)
        self._obs64 = np.zeros(len(p.observations))
        self._obs = np.zeros(len(p.observations), dtype=np.float32)
        applied = [safety.actions[a].applied or a for a in p.actions]
        self._applied_slots = tags.indices(applied)
        self._hand_auto = self.checker.names.index(safety.hand_auto_tag) if safety.hand_auto_tag else -1
        self._proposed = np.zeros(n_act)
        self._candidate = np.zeros(n_act)
        self._action = self.shield.safe.copy()  # last written (or, in ESTOP, safe) action
        policy.attach(self._action, self._obs64, self.period)
        self._out = np.zeros(n_act)
        self._saved_action = np.zeros(n_act)  # the last action, kept while a controller sees it less the test signal
        self.outputs = Outputs(settings, tags, transport, self.stats)
        self.last_safe_write: dict[str, Any] | None = None  # the e-stop's, for its trip record
        self._safe_out: dict[str, Any] | None = None  # the safe write of a trip this cycle's decision raised
        self.alarms: dict[str, str] = {}  # active alarms (PLC authority, setpoint mismatch) -> message
        self.silence = SilenceWatch(gw.comms_timeout_ms / 1000.0, self.period)
        self._start_requested = settings.gateway.auto_start
        self._last_code = "ok"
        self._decision = _Decision()
        self._log = get_logger("edgewarden.cycle")
        self.stage = "start"  # the step running now, named by the fail-safe boundary
        self._faults_seen: set[str] = set()  # internal faults logged while latched (once each)

        self.override = Override(modes, metrics, list(p.actions), self._alarm,
                                 lambda: self.safety.supervisor.resume())
        self.excitation = Excitation(p.actions, self.shield.hi - self.shield.lo, self.shield.rate, p.excitation,
                                     self._excitation_record)

        self.estop = EStop(modes, [
            ("write_safe", self.write_safe),
            ("metrics", self._count_trip),
        ])

    # ---- the safety stack, and its swap on a reload ------------------------------------
    @property
    def checker(self) -> ObservationChecker:
        return self.safety.checker

    @property
    def shield(self) -> ActionShield:
        return self.safety.shield

    @property
    def interlocks(self) -> Interlocks:
        return self.safety.interlocks

    def apply_settings(self, new: Settings) -> None:
        """Swap in a safety stack built from ``new`` (limits, actions, interlocks, fallback
        tuning), between two cycles; its run-time history carries over. The caller has
        validated the change (edgewarden/gateway/ops/reload.py): the tags, the policy and the cycle
        are the same."""
        stack = build_stack(new, self.tags, self.policy, self.modes, self.models.on_trouble, self._authority_changed)
        stack.take_over(self.safety)
        self.settings, self.safety = new, stack
        self.excitation.use_limits(stack.shield.hi - stack.shield.lo, stack.shield.rate, new.policy.excitation)

    # ---- operator commands (called from the control socket, same event loop) -----
    def request_start(self, actor: str) -> None:
        """Start is honoured from READY only, and never by a gateway that writes nothing."""
        if not self.outputs.writes:
            raise ModeRefused('start refused: [policy] kind = "monitor": this gateway writes nothing')
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
        if self._comms_lost(time.monotonic()):
            raise ModeRefused(f"reset refused: the PLC still does not answer (no good read or acknowledged write "
                              f"for {self.silence.timeout_s * 1000:.0f} ms){self._link_errors()}")
        if not self.outputs.vouching:
            raise ModeRefused("reset refused: the PLC has not acknowledged the safe outputs (heartbeat stopped)")
        if self.stats.consecutive_overruns:  # the last cycle overran: deadline_overrun is still present
            raise ModeRefused(f"reset refused: the cycle still overruns its deadline "
                              f"({self.stats.consecutive_overruns} in a row)")
        self._start_requested = False
        self.modes.request(Mode.INHIBITED, reason="operator reset", actor=actor)

    def request_manual(self, actor: str, setpoints: dict[str, float] | None = None) -> None:
        """Operator takes manual control; optional setpoints pass the shield every cycle."""
        if setpoints is not None and not self.outputs.writes:
            raise ModeRefused('manual setpoints refused: [policy] kind = "monitor": this gateway writes nothing')
        self.override.operator_takes(actor, setpoints, self._action)

    def request_auto(self, actor: str) -> None:
        """Operator hands control back (bumpless: the shield ramps from the applied action):
        from MANUAL to the mode before it, or from FALLBACK to the active policy now."""
        if self.modes.mode == Mode.FALLBACK and not self.override.held_by:
            self.modes.request(Mode.AUTO, reason="operator hands control back to the active policy", actor=actor)
            return
        self.override.operator_releases(actor)

    # ---- the loop -----------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        clock = time.perf_counter
        pacer, stats = self.pacer, self.stats
        pauses = GcPauses()
        between = CycleGc() if self.settings.gateway.gc == "between_cycles" else None
        # comms loss and overruns count from here (until a first good read, ack, on-time cycle)
        self.outputs.acked_mono = time.monotonic()
        self.silence.start(self.outputs.acked_mono)
        try:
            deadline = pacer.start()
            while not stop.is_set():
                await pacer.wait(deadline)
                t0 = clock()
                pauses.take()  # collections while asleep stalled nothing
                try:
                    await self.step(time.monotonic() - (t0 - deadline))
                except Exception as exc:  # noqa: BLE001 - the fail-safe boundary: any fault, one way to stop
                    await self.fail_safe(self.stage, exc)
                work = clock() - t0
                try:
                    self.stage = "account"
                    if between is not None:
                        between.collect()
                    self._t[_GC] = pauses.take()
                    self._account(work, t0 - deadline)
                    self.metrics.push()  # the exporter's figures, rendered in the cycle's slack
                except Exception as exc:  # noqa: BLE001
                    await self.fail_safe(self.stage, exc)
                deadline = pacer.advance(deadline)
                stats.deadline_misses, stats.consecutive_overruns = pacer.misses, pacer.consecutive
                if not pacer.consecutive:
                    if not self.outputs.failed and self.on_healthy_cycle is not None:
                        try:  # the systemd watchdog, a staged reload applied: inside the boundary too
                            self.on_healthy_cycle()
                        except Exception as exc:  # noqa: BLE001
                            await self.fail_safe("healthy_cycle", exc)
                    continue
                self.metrics.deadline_misses.inc()
                overrun = pacer.over_budget()
                if overrun is not None:
                    await self.estop.trip("deadline_overrun", overrun)
        finally:
            pauses.close()
            if between is not None:
                between.close()
            self.excitation.stop("the gateway stops", "gateway")  # its start has its end on record

    async def step(self, tick: float | None = None) -> None:
        """One control cycle: the steps of the module's docstring, in order. ``tick``: the
        cycle's place on the grid (monotonic clock; default now): its read and write
        deadlines count from it, so waking up late comes out of the read's share, not out
        of the next period."""
        start = time.monotonic() if tick is None else tick
        self.stage = "settle"
        await self.outputs.begin_cycle()  # write_ack = "next_cycle": the last cycle's write, acknowledged
        self.stage = "model_swap"
        self._take_staged_model(start)                       # 0. a swap lands between cycles
        self.stage = "read"
        now = await self._read(start)                        # 1. read, bounded by the cycle
        t_check = time.perf_counter()
        self.stage = "check"
        verdict = await self._check(now)                     # 2-3. checks, comms loss, hold timeout
        self.stage = "plc"
        self._follow_plc(verdict)                            # 4. hand/auto, PLC authority
        self.stage = "interlocks"
        lo, hi = self.interlocks.bounds(self.checker.values)  # 5. this cycle's bounds
        self._t[_CHECK] = time.perf_counter() - t_check
        self.stage = "decide"
        d = await self._decide(verdict, lo, hi, now)         # 6-9. mode gate, policy, shield, write
        if self.outputs.vouching == (HEARTBEAT_STOPPED in self.alarms):  # 9a. the heartbeat stopped or resumed
            self._alarm(HEARTBEAT_STOPPED, not self.outputs.vouching,
                        "the heartbeat resumes: the safe outputs are acknowledged" if self.outputs.vouching else
                        "the PLC did not acknowledge the safe outputs: heartbeat stopped, its dead-man takes over")
        self.stage = "applied"
        for change in self.authority.compare(self._action, self.snap, now, self.modes.mode in WRITING):
            self._alarm(change.name, change.raised, change.message)  # 9b. applied vs written
        self.stage = "audit"
        await self._record(d, verdict)                       # 10. audit hand-off
        self.stage = "metrics"
        if verdict.code.startswith("soft_limit"):
            self.safety.trust.unclean(now)                   # no band widens through a soft-limit alarm
            if verdict.code != self._last_code:
                self.metrics.soft_alarms.inc()               # 11. metrics (the rest: _account)
        self._last_code = verdict.code

    def _take_staged_model(self, now: float) -> None:
        """A validated model staged by load/promote/rollback takes over here; a rollback
        in FALLBACK hands control straight to the restored controller (bumpless: it
        starts from the last action, and the shield ramps)."""
        rollback = self.models.rolling_back
        staged = self.models.take_staged(now)
        if staged is not None:
            self.policy = staged
            staged.attach(self._action, self._obs64, self.period)
            self.safety.supervisor.use_policy(staged)
            self.safety.trust.use_policy(staged, full=staged is self.models.configured
                                         and not self.settings.safety.authority.band_configured_model)
            self.metrics.authority(self.safety.trust.record(), self.safety.trust.applies)
            if rollback and self.modes.mode == Mode.FALLBACK:
                self.modes.request(Mode.AUTO, reason="rolled back to the previous controller: it takes over",
                                   actor="gateway")

    async def _read(self, start: float) -> float:
        """Every tag into the snapshot by 0.8 of a period; sets the write's deadline.
        Returns the time after the read: a late link has cost this cycle its time."""
        period = self.period
        t_read = time.perf_counter()
        await self.transport.read(self.snap, start + READ_SHARE * period)
        self.snap.flag_beyond_float32()
        self._t[_READ] = time.perf_counter() - t_read
        now = time.monotonic()
        self.outputs.deadline = max(start + WRITE_SHARE * period, now + WRITE_MIN_SHARE * period)
        return now

    async def _check(self, now: float) -> Verdict:
        """Observation checks (a TRIP trips); comms loss past its timeout trips, and so does
        unusable data (stale, no data) that lasts as long while actions are written: no
        open-loop run on a frozen sensor."""
        verdict = self.checker.check(self.snap, now)
        self.stats.data_age_s = self.checker.data_age(now)
        if verdict.status == Status.TRIP:
            await self.estop.trip(verdict.code, verdict.message)
        silence = self.silence
        if self._comms_lost(now):
            await self.estop.trip("comms_loss", f"no good read or acknowledged write from the PLC for more than "
                                  f"{silence.timeout_s * 1000:.0f} ms{self._link_errors()}")
        if silence.held_too_long(verdict.status == Status.HOLD and self.modes.mode in WRITING, now):
            await self.estop.trip(f"hold_timeout:{verdict.code}", f"held longer than "
                                  f"{silence.timeout_s * 1000:.0f} ms: {verdict.message}")
        return verdict

    def _comms_lost(self, now: float) -> bool:
        """Silence past the timeout: no good read on a link, or no acknowledged write (a
        gateway that writes nothing, kind = "monitor", is judged by its reads alone)."""
        acked = self.outputs.acked_mono if self.outputs.writes else math.inf
        return self.silence.lost(now, self.stats.last_cycle_s, acked, self.transport.health().values())

    def _link_errors(self) -> str:
        """What the links last said went wrong, for a trip's message ("" when nothing)."""
        errors = [f"{name}: {h.last_error}" for name, h in self.transport.health().items() if h.last_error]
        return f" ({'; '.join(errors)})" if errors else ""

    def _follow_plc(self, verdict: Verdict) -> None:
        """Human override from the PLC's hand/auto selector, and whether the PLC accepts
        the gateway's setpoints (judged on good data only)."""
        if verdict.status != Status.OK:  # not confirmed this cycle: status and metrics say "unknown"
            self.authority.unknown()
            self.override.acceptance_unknown()
            return
        monitored = self.checker.values
        if self._hand_auto >= 0:
            self.override.follow_hand_auto(monitored[self._hand_auto] != 0.0)
        accepts = self.authority.read(monitored)
        if accepts is not None:
            self.override.follow_plc_acceptance(accepts)

    async def _decide(self, verdict: Verdict, lo: np.ndarray, hi: np.ndarray, now: float) -> _Decision:
        """The mode gate: what this cycle writes, and under which mode."""
        d = self._decision
        d.mode, d.written, d.proposed, d.shadow, d.uncertainty = self.modes.mode, None, None, None, math.nan
        d.band, d.excite = False, None
        status = verdict.status
        if self.excitation.active and (d.mode != Mode.AUTO or verdict.code != "ok" or self.alarms):
            self.excitation.stop(f"the plant left plain AUTO ({d.mode.name}, {verdict.code}"
                                 + "".join(f", {a}" for a in self.alarms) + ")", "gateway")
        trust = self.safety.trust
        trouble = d.mode in (Mode.FALLBACK, Mode.ESTOP)
        if trouble or (trust.engaged and d.mode != Mode.AUTO):  # a hand-over or a trip resets its band
            trust.release(trouble)
        if d.mode == Mode.ESTOP:
            if self.outputs.writes:  # the safe outputs, then the heartbeat only once they are acknowledged
                self.stage = "write"
                d.written = self.shield.safe
                await self.outputs.write_safe(self.shield.safe.tolist(), self.outputs.deadline)
                self._t[_WRITE] = self.outputs.seconds
        elif d.mode in (Mode.INHIBITED, Mode.READY):
            self._track_applied()  # a start, however late, ramps from what the plant gets then
            self._gate_readiness(status)
            await self._write_heartbeat()
        elif status == Status.HOLD:
            self.stats.holds += 1  # data not usable this cycle: hold the last action
            self.metrics.holds.inc()
            await self._write_heartbeat()
        elif d.mode == Mode.MANUAL:
            self._track_applied()
            setpoints = self.override.operator_setpoints
            if setpoints is not None:
                d.written = await self._shield_and_write(setpoints, lo, hi)
            else:
                await self._write_heartbeat()
        elif d.mode in WRITING:
            # 7. policy inference, and the Simplex switch
            d.proposed = await self._infer(now)
            d.shadow = self.models.shadow_step(self._obs, d.proposed, lo, hi, self.period, now, self.stats.cycles)
            if self.modes.mode == Mode.FALLBACK:
                self.safety.supervisor.fallback_step(self.checker.values, self._action, self.period, d.proposed,
                                                     lo, hi, now, self._candidate,
                                                     trust.band if trust.applies else None)
            if self.modes.mode == Mode.AUTO and d.proposed is not None:
                self._candidate[:] = d.proposed
                if trust.applies and not trust.full:  # 7a. bounded authority: the band around the incumbent's
                    self.stage = "authority"
                    if trust.limit(self._candidate, self._obs64 if trust.on_observations else self.checker.values,
                                   self._action, self.period, now):
                        self.metrics.authority_clips.inc()
                    d.band = True
            # 7b. excitation: the operator's test signal on the controller's output, in plain AUTO only
            if self.excitation.active:
                if self.modes.mode != Mode.AUTO or d.proposed is None:
                    self.excitation.stop(f"the controller's proposal was not used ({self.modes.mode.name})", "gateway")
                elif (excite := self.excitation.step(now, self._candidate, lo, hi)) is not None:
                    self._candidate += excite
                    d.excite = excite
            # 8. shield, 9. write
            d.mode = self.modes.mode
            if d.mode in WRITING:
                d.written = await self._shield_and_write(self._candidate, lo, hi)
        d.ack = self.outputs.ack
        if self._safe_out is not None:  # the decision tripped: the safe write went out instead
            d.written, d.mode, d.ack = self.shield.safe, Mode.ESTOP, self._safe_out["ack"]
            self._safe_out = None
        return d

    async def _record(self, d: _Decision, verdict: Verdict) -> None:
        """The cycle's audit record, handed to the writer thread; a log that cannot be
        written trips here too, not only through on_fatal, so no cycle runs on in AUTO
        unrecorded."""
        age = self.stats.data_age_s
        record = {
            "n": self.stats.cycles,
            # the mode the outputs were written under: a command that lands while the write
            # is in flight (operator MANUAL, say) shows in its own record and the next cycle's
            "mode": (d.mode if d.written is not None else self.modes.mode).name,
            "obs": self._obs_record(),
            "verdict": verdict.code,
            "interlocks": self.interlocks.active_names() if self.interlocks.active.any() else None,
            "proposed": None if d.proposed is None else d.proposed.tolist(),
            "age_ms": round(age * 1000.0, 3) if age == age else None,
            "written": None if d.written is None else d.written.tolist(),
            "hb": self.outputs.heartbeat_sent,  # None: no heartbeat went out this cycle
            "ack": d.ack,
            "model": self.policy.sha256[:16],
        }
        if d.uncertainty == d.uncertainty:  # the model's uncertainty about this cycle's input
            record["unc"] = round(d.uncertainty, 6) if d.uncertainty != math.inf else "inf"
        if d.shadow is not None:
            record["shadow"] = d.shadow
        if d.band:  # the band the learned policy's proposal was held to, and whether it clipped
            trust = self.safety.trust
            record["band"] = trust.band.tolist()
            if trust.clipped:
                record["band_clip"] = True
        if d.excite is not None:
            record["excite"] = d.excite.tolist()
        if self.outputs.prev_ack is not None:
            record["prev_ack"] = self.outputs.take_prev_ack()
        t_audit = time.perf_counter()
        try:
            self.audit.append_owned("cycle", record)  # built fresh here, from JSON types only
        except AuditError as exc:
            await self.estop.trip("audit_failure", str(exc))
        self._t[_AUDIT] = time.perf_counter() - t_audit

    # ---- policy, fallback, shield -----------------------------------------------------
    async def _infer(self, now: float) -> np.ndarray | None:
        """The policy's proposal, or None when it cannot be trusted this cycle."""
        self.stage = "policy"
        self.snap.values.take(self._obs_slots, out=self._obs64)
        np.copyto(self._obs, self._obs64, casting="same_kind")
        t_infer = time.perf_counter()
        added = self.excitation.added  # what the test signal added to the last write (None: nothing)
        try:
            try:
                if added is not None:  # the controller sees its own last output, not the operator's test signal
                    np.copyto(self._saved_action, self._action)
                    self._action -= added
                self._proposed[:] = self.policy.infer(self._obs)
            finally:
                if added is not None:
                    np.copyto(self._action, self._saved_action)
            self._t[_INFER] = time.perf_counter() - t_infer
        except PolicyError as exc:
            self.stats.policy_faults += 1
            if self.models.on_trouble(f"policy fault: {exc}", now):
                return None  # a recently swapped model: the previous one takes over next cycle
            if self.settings.safety.policy_fault == "estop":
                await self._trip_in_decision("policy_fault", str(exc))
            else:
                self.safety.supervisor.enter(f"policy fault: {exc}")
            return None
        unc = self._decision.uncertainty = self.policy.uncertainty
        screen = self.safety.supervisor.screen(self._obs64, unc)
        if screen == Screen.IN:
            return self._proposed
        self.stats.ood_inputs += 1
        self.safety.trust.unclean(now)
        return None if screen == Screen.REJECTED else self._proposed

    async def _shield_and_write(self, candidate: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray | None:
        self.stage = "shield"
        t_shield = time.perf_counter()
        res = self.shield.apply(candidate, self._action, self.period, self._out, lo, hi)
        self._t[_SHIELD] = time.perf_counter() - t_shield
        if res.code != "ok":
            self.metrics.shield_rule(res.code)
        if not res.ok:
            await self._trip_in_decision(res.code, "no action satisfies every bound, rate limit and interlock"
                                         if res.code.startswith("interlock") else "a non-finite action was proposed")
            return None
        if res.code != "ok":
            self.stats.shield_interventions += 1
            self.metrics.shield_interventions.inc()
            if res.clipped:  # proposals outside bounds/interlocks; rate-limited ramps are expected
                now = time.monotonic()
                self.safety.supervisor.intervened(now)
                self.safety.trust.unclean(now)
        self._action[:] = self._out
        await self._write(self._action)
        return self._action

    async def _trip_in_decision(self, code: str, message: str) -> None:
        """A trip raised by this cycle's own decision (policy, shield): the e-stop's safe
        write is then what this cycle put out, and its record says so."""
        if await self.estop.trip(code, message):
            self._safe_out = self.last_safe_write

    # ---- alarms, and what the plant really gets ----------------------------------------
    def _authority_changed(self, change: dict[str, Any]) -> None:
        """The band a learned policy acts within changed (widened, set, reset): audited."""
        self._log.info("authority band", **change)
        self.metrics.authority(change["band"], True)
        with contextlib.suppress(AuditError):  # a log that cannot be written trips in the cycle
            self.audit.append("authority", {**change, "t_mono": time.monotonic()})

    def _excitation_record(self, kind: str, payload: dict[str, Any]) -> None:
        """An excitation started or stopped: audited (the start is the operator's command)."""
        self._log.info("excitation", **payload)
        with contextlib.suppress(AuditError):  # a log that cannot be written trips in the cycle
            self.audit.append(kind, {**payload, "t_mono": time.monotonic()})

    def _alarm(self, name: str, raised: bool, message: str) -> None:
        """An alarm raised or cleared: audited, counted, kept for status (never on the hot path)."""
        if raised:
            self.alarms[name] = message
        else:
            self.alarms.pop(name, None)
        self.metrics.alarm(name, raised)
        with contextlib.suppress(AuditError):  # a log that cannot be written trips below
            self.audit.append("alarm", {"alarm": name, "raised": raised, "message": message})

    def _track_applied(self) -> None:
        """In MANUAL, and while a start is awaited (INHIBITED, READY), the last action follows
        what the plant really gets: control resumes from it without a bump."""
        applied = self.snap.values[self._applied_slots]
        good = np.isfinite(applied) & (self.snap.quality[self._applied_slots] == Quality.GOOD)
        np.copyto(self._action, np.clip(applied, self.shield.lo, self.shield.hi), where=good)

    # ---- helpers --------------------------------------------------------------------
    @property
    def alarm_names(self) -> list[str]:
        """Every alarm the loop may raise (metrics show each, at 0 until raised)."""
        return [PLC_NOT_ACCEPTING, HEARTBEAT_STOPPED, *self.authority.alarm_names]

    @property
    def action(self) -> np.ndarray:
        """The last action written (or, in ESTOP, the safe outputs)."""
        return self._action

    @property
    def manual_by(self) -> frozenset[str]:
        return frozenset(self.override.held_by)

    def _obs_record(self) -> list[float | None]:
        values = self.snap.values[self._obs_slots]
        return [None if not math.isfinite(v) else v for v in values.tolist()]

    def _gate_readiness(self, status: Status) -> None:
        if self.modes.mode == Mode.INHIBITED and status == Status.OK:
            self.modes.request(Mode.READY, reason="plant healthy, policy loaded", actor="gateway")
        elif self.modes.mode == Mode.READY and status != Status.OK:
            self.modes.request(Mode.INHIBITED, reason=f"plant not healthy: {self.checker.verdict.message}",
                               actor="gateway")
        elif self.modes.mode == Mode.READY and self._start_requested:
            self._start_requested = False
            self.modes.request(Mode.AUTO, reason="auto_start", actor="gateway")

    async def _write(self, action: np.ndarray) -> None:
        self.stage = "write"
        await self.outputs.write(action)
        self._t[_WRITE] = self.outputs.seconds

    async def _write_heartbeat(self) -> None:
        self.stage = "write"
        await self.outputs.write_heartbeat()
        self._t[_WRITE] = self.outputs.seconds

    async def settle_writes(self) -> None:
        """The write still in flight (``write_ack = "next_cycle"``), collected: before the
        transport closes."""
        await self.outputs.settle()

    async def write_safe(self, event: TripEvent) -> None:
        """The e-stop's first handler: safe outputs plus heartbeat, straight to the transport
        (after the write in flight, if any: the safe outputs are always the last word)."""
        self._action[:] = self.shield.safe
        self.last_safe_write = await self.outputs.write_safe(self.shield.safe.tolist(),
                                                             time.monotonic() + self.period)

    async def fail_safe(self, stage: str, exc: BaseException) -> None:
        """The fail-safe boundary: an exception escaped ``stage`` (a cycle step, or a task
        the daemon depends on). Trips ``internal_fault`` (safe outputs, cause audited) and
        keeps the daemon up, latched. Already latched: the safe outputs are written again
        (this cycle's own safe write may be what failed), the fault logged once per kind."""
        self.stats.internal_faults += 1
        code, message = internal_fault(stage, exc)
        if await self.estop.trip(code, message):
            return
        if code not in self._faults_seen:
            self._faults_seen.add(code)
            self._log.error("internal fault while latched", code=code, message=message)
        with contextlib.suppress(Exception):  # the boundary itself never raises
            await self.write_safe(TripEvent(code, message, "gateway"))

    async def _count_trip(self, event: TripEvent) -> None:
        self.metrics.trips.labels(reason=event.code.split(":")[0]).inc()

    def _account(self, work: float, lateness: float) -> None:
        """The metrics stage: the cycle's stage times into the histograms (and the trace)."""
        t_metrics = time.perf_counter()
        t = self._t
        for col, observe in self._observe:
            v = t[col]
            if v == v:  # not NaN: the stage ran
                observe(v)
        s = self.stats
        s.cycles += 1
        s.last_cycle_s = work
        s.max_cycle_s = max(s.max_cycle_s, work)
        s.max_lateness_s = max(s.max_lateness_s, lateness)
        m = self.metrics
        m.cycles.inc()
        m.cycle_seconds.observe(work)
        m.lateness_seconds.observe(max(lateness, 0.0))
        t[_METRICS] = dt = time.perf_counter() - t_metrics
        self._observe_metrics(dt)
        trace = self.trace
        if trace is not None:
            t[_LATE], t[_WORK] = lateness, work
            trace.row[:] = t
            trace.commit()
        t[:] = self._nans

