"""The gateway daemon: build everything in order, run the cycle, shut down in reverse.

Build order (each step refuses to go on with a clear error): config (done by the
caller) → logging → tag map → policy (verified against the tag map, warmed up) → audit
log (recovered, config and model loads recorded durably) → metrics exporter → PLC
connections → control loop → operator socket. Shutdown: stop the cycle; if actions
were being written, write the safe outputs once; stop the heartbeat (the PLC's dead-man
takes over); flush and close the audit log; close connections and the exporter.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Coroutine
from typing import Any

from edgewarden.gateway.audit import highwater
from edgewarden.gateway.audit.checkpoint import Signer
from edgewarden.gateway.audit.writer import AuditWriter
from edgewarden.gateway.certs.files import expiries
from edgewarden.gateway.config import LoadedConfig, Settings
from edgewarden.gateway.config_checks import warnings
from edgewarden.gateway.cycle import ControlLoop
from edgewarden.gateway.errors import AuditError, TransportError
from edgewarden.gateway.io.composite import CompositeTransport
from edgewarden.gateway.io.tags import TagMap
from edgewarden.gateway.logs import get_logger, stamp_context
from edgewarden.gateway.modes import WRITING, ModeMachine, Transition
from edgewarden.gateway.ops import operator
from edgewarden.gateway.ops.control import ControlServer, Operators
from edgewarden.gateway.ops.metrics import Metrics, watch_audit, watch_certificates, watch_cycle, watch_links
from edgewarden.gateway.ops.reload import Outcome, Reloader
from edgewarden.gateway.ops.sdnotify import Notifier
from edgewarden.gateway.policy.controllers import ControllerPolicy
from edgewarden.gateway.policy.onnx_policy import OnnxPolicy
from edgewarden.gateway.policy.registry import load_verified
from edgewarden.gateway.safety.estop import TripEvent
from edgewarden.gateway.safety.fault import internal_fault

_NOT_RUNNING = Outcome("refused", "the gateway is not running yet", [])


def run_daemon(loaded: LoadedConfig) -> int:
    """``edgewarden run``: CPU affinity and real-time priority as configured (before the
    event loop and any thread exist, so every thread inherits them), then the daemon on
    the configured event loop."""
    from edgewarden.gateway import timing

    gw = loaded.settings.gateway
    scheduling = timing.prepare_process(gw)
    return timing.run(Gateway(loaded, scheduling=scheduling).run(), gw)


def load_policy(s: Settings) -> OnnxPolicy | ControllerPolicy:
    """The configured policy: a model, verified (signature, pin, contract, graph, warm-up),
    or a controller without one (``[policy] kind``)."""
    if s.policy.path is None:  # kind pid, hold or monitor (the schema ties path to onnx)
        return ControllerPolicy(s)
    return load_verified(s, s.policy.path, s.policy.sha256)


class Gateway:
    """One daemon. ``run()`` returns when stopped (SIGTERM/SIGINT or ``request_stop``)."""

    def __init__(self, loaded: LoadedConfig, *, on_ready: Callable[[Gateway], None] | None = None,
                 scheduling: list[str] | None = None) -> None:
        self._loaded = loaded
        self.scheduling = scheduling or []
        self.on_ready = on_ready
        self.log = get_logger("edgewarden")
        self._stop = asyncio.Event()
        self.metrics_port: int | None = None
        self.loop: ControlLoop | None = None
        self.control: ControlServer | None = None
        self.audit: AuditWriter | None = None
        self.metrics: Metrics | None = None
        self.notifier: Notifier | None = None
        self.reloader: Reloader | None = None  # SIGHUP and the reload command, once the loop runs
        self._reload_task: asyncio.Future[Outcome] | None = None
        self.stop_reason = "the gateway did not start"  # recorded in the shutdown record
        self.exit_code = 0  # what run() returns: 74 after a fatal audit failure, 70 a failed loop
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def loaded(self) -> LoadedConfig:
        """The configuration in force (the last reload applied, if any)."""
        return self.reloader.loaded if self.reloader is not None else self._loaded

    @property
    def settings(self) -> Settings:
        return self.loaded.settings

    def request_stop(self, reason: str = "stop requested") -> None:
        """Stop the daemon (the plant handed to its safe state first); from here on every
        operator command that would change the mode is refused."""
        if not self._stop.is_set():
            self.stop_reason = reason
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def run(self) -> int:
        s = self.settings
        tags = TagMap.from_settings(s)
        policy = load_policy(s)
        aio = asyncio.get_running_loop()
        aio.set_exception_handler(self._loop_exception)
        audit = AuditWriter(
            s.audit.dir,
            commit_interval_s=s.audit.commit_interval_ms / 1000.0,
            segment_max_bytes=int(s.audit.segment_mb * 1024 * 1024),
            on_fatal=lambda err: aio.call_soon_threadsafe(self._audit_failed, err),
            signer=Signer.from_file(s.audit.signing_key) if s.audit.signing_key else None,
            checkpoint_every_records=s.audit.checkpoint_every_records,
            checkpoint_every_s=s.audit.checkpoint_every_s,
            checkpoint_export=s.audit.checkpoint_export,
            segment_max_age_s=s.audit.segment_max_age_s,
            retention_max_segments=s.audit.retention_max_segments,
            retention_max_bytes=(int(s.audit.retention_max_mb * 1024 * 1024)
                                 if s.audit.retention_max_mb else None),
            retention_max_age_s=(s.audit.retention_max_age_days * 86400.0
                                 if s.audit.retention_max_age_days else None),
            high_water=highwater.path_for(s.audit.dir),
        )
        audit.open()
        self.audit = audit
        metrics = Metrics()
        self.metrics = metrics
        metrics.healthy_within_s = max(2.0, 5.0 / s.gateway.cycle_hz)
        metrics.model.info({"sha256": policy.sha256, "algorithm": policy.algorithm,
                            "path": str(policy.path or "")})
        watch_audit(metrics, audit.stats)
        watch_certificates(metrics, lambda: expiries(s))
        # monitor: the transport refuses writes too, and asks the server for no write access
        transport = CompositeTransport(tags, s.connections, read_only=s.policy.kind == "monitor",
                                       period_s=1.0 / s.gateway.cycle_hz)
        watch_links(metrics, transport.health)
        control: ControlServer | None = None
        try:
            audit.append_durable("config_load", {"path": str(self.loaded.path), "sha256": self.loaded.sha256,
                                                 "gateway": s.gateway.name, "obs_tags": list(s.policy.observations),
                                                 "act_tags": list(s.policy.actions),
                                                 "obs_units": [s.tags[t].units for t in s.policy.observations],
                                                 "act_units": [s.tags[t].units for t in s.policy.actions],
                                                 "act_low": [s.safety.actions[a].min for a in s.policy.actions],
                                                 "act_high": [s.safety.actions[a].max for a in s.policy.actions],
                                                 "cycle_hz": s.gateway.cycle_hz,
                                                 "pid": {a: p.model_dump() for a, p in s.policy.pid.items()}})
            audit.append_durable("model_load", {"path": None if policy.path is None else str(policy.path),
                                                "sha256": policy.sha256, "algorithm": policy.algorithm})
            if s.metrics.enabled:
                self.metrics_port = metrics.serve(s.metrics.host, s.metrics.port,
                                                  avoid_cpus=frozenset(s.gateway.cpu_affinity or ()))
            await transport.connect()
            modes = ModeMachine()
            notifier = Notifier(min_watchdog_interval_s=0.1)
            self.notifier = notifier
            loop = ControlLoop(s, tags, transport, policy, modes, audit, metrics,
                               on_healthy_cycle=self._healthy_cycle)
            self.loop = loop
            watch_cycle(metrics, lambda: loop.stats)
            metrics.known_alarms(loop.alarm_names)
            self.reloader = Reloader(self.loaded, loop, audit, metrics, notifier, self.log)
            stamp_context(lambda: (loop.stats.cycles, loop.modes.mode.name))
            modes.subscribe(self._on_transition)
            loop.estop.add_handler("audit", self._audit_trip)
            control = ControlServer(s.control.socket, operator.handlers(self),
                                    operators=Operators(s.control.allowed_uids, s.control.operators_group),
                                    on_denied=self._on_denied, max_connections=s.control.max_connections,
                                    max_per_uid=s.control.max_connections_per_uid,
                                    request_timeout_s=s.control.request_timeout_s,
                                    accept_per_s=s.control.accept_per_s)
            self.control = control
            await control.start()
            self._install_signals(aio)
            for line in warnings(s):
                self.log.warning("insecure configuration", problem=line)
            self.log.info("gateway started", name=s.gateway.name, cycle_hz=s.gateway.cycle_hz,
                          model=policy.sha256[:16], metrics_port=self.metrics_port,
                          control=str(s.control.socket), event_loop=type(aio).__module__.split(".")[0],
                          scheduling=", ".join(self.scheduling) or "default")
            if self.on_ready is not None:
                self.on_ready(self)
            notifier.ready(f"cycling at {s.gateway.cycle_hz:g} Hz, mode {modes.mode.name}")
            watched = s.policy.path if s.policy.watch else None  # a model file (kind = onnx) only
            watcher = self._supervise(loop.models.watch_file(watched, s.policy.sha256, self._stop, log=self.log),
                                      "model_watch") if watched is not None else None
            try:
                await loop.run(self._stop)
            except Exception as exc:  # noqa: BLE001 - the loop itself broke: safe outputs, then exit
                await loop.fail_safe("loop", exc)
                self.stop_reason = f"the control loop failed: {internal_fault('loop', exc)[1]}"
                self.exit_code = 70  # EX_SOFTWARE: systemd restarts it, INHIBITED
            if watcher is not None:
                watcher.cancel()
            notifier.stopping("handing the plant to its safe state")
            await self._hand_over(loop)
            if loop.trace is not None and s.gateway.timing_trace is not None:
                loop.trace.save(s.gateway.timing_trace)  # after the hand-over: it never delays it
            notifier.close()
        finally:
            if control is not None:
                await control.close()
            await transport.close()
            metrics.close()
            with contextlib.suppress(AuditError):
                audit.append("shutdown", {"mode": self.loop.modes.mode.name if self.loop else None,
                                          "reason": self.stop_reason})
            audit.close()
        self.log.info("gateway stopped", cycles=self.loop.stats.cycles if self.loop else 0, reason=self.stop_reason)
        return self.exit_code

    # ---- wiring ---------------------------------------------------------------------
    def _install_signals(self, aio: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                aio.add_signal_handler(sig, self.request_stop, sig.name)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            aio.add_signal_handler(signal.SIGHUP, self._on_sighup)

    def _loop_exception(self, aio: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """asyncio's report of an error outside any task we await (a peer's reply a library
        could not decode, say): one log line, never a multi-line dump. The link it broke is
        handled by the transport (dropped, reconnected; comms loss past its timeout trips)."""
        exc = context.get("exception")
        where = context.get("protocol") or context.get("task") or context.get("future")
        message = (str(context.get("message") or "unknown").splitlines() or ["unknown"])[0]
        self.log.error("event loop error", error=message,
                       fault=internal_fault("event_loop", exc)[1] if exc is not None else None,
                       source=type(where).__name__ if where is not None else None)

    def _healthy_cycle(self) -> None:
        """After a cycle that finished on time with its writes accepted (between two cycles)."""
        if self.metrics is not None:
            self.metrics.last_healthy_mono = time.monotonic()
        if self.reloader is not None:
            self.reloader.apply_staged()
        if self.notifier is not None:
            self.notifier.watchdog()

    # ---- SIGHUP and the reload command (edgewarden/gateway/ops/reload.py) ------------------------
    def request_reload(self) -> Outcome:
        """Validate the config file again; stage it (applied between two cycles) or refuse it."""
        return self.reloader.request() if self.reloader is not None else _NOT_RUNNING

    async def reload_async(self) -> Outcome:
        """The same, validated in a worker thread (the cycle keeps its deadlines)."""
        return await self.reloader.request_async() if self.reloader is not None else _NOT_RUNNING

    def _on_sighup(self) -> None:
        self._reload_task = self._supervise(self.reload_async(), "reload")

    def _supervise(self, work: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """A task the daemon depends on: an exception escaping it trips the e-stop through
        the fail-safe boundary, like one escaping a cycle step."""
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None or self.loop is None:
            return
        if task.get_name() == "fail_safe":  # cannot happen (the boundary never raises); never recurse
            self.log.error("fail-safe boundary failed", error=internal_fault("fail_safe", task.exception())[1])
            return
        self._supervise(self.loop.fail_safe(f"task:{task.get_name()}", task.exception()), "fail_safe")  # type: ignore[arg-type]

    def _on_transition(self, t: Transition) -> None:
        assert self.audit is not None and self.loop is not None
        with contextlib.suppress(AuditError):  # a failed log trips through on_fatal
            self.audit.append("mode", {"from": t.source.name, "to": t.target.name,
                                       "reason": t.reason, "actor": t.actor})
        self.loop.metrics.entered(t.target)
        if self.notifier is not None:
            self.notifier.notify(f"STATUS=mode {t.target.name}: {t.reason}"[:400])
        self.log.info("mode", source=t.source.name, target=t.target.name, reason=t.reason, actor=t.actor)

    async def _audit_trip(self, event: TripEvent) -> None:
        """Make the trip durable before it is acknowledged."""
        assert self.audit is not None
        assert self.loop is not None
        # what the safe write really did (ack per tag), not what it meant to do
        await self.audit.append_durable_async("trip", {"code": event.code, "message": event.message,
                                                       "actor": event.actor,
                                                       "safe_write": self.loop.last_safe_write})
        self.log.error("e-stop", code=event.code, message=event.message, actor=event.actor)

    def _audit_failed(self, err: AuditError) -> None:
        """An audit write/fsync failure (or its segment removed under it): trip to the safe
        state, then stop with exit 74, since a gateway that cannot record must not go on."""
        if self.loop is not None:
            self._supervise(self._audit_fatal(err), "audit_trip")

    async def _audit_fatal(self, err: AuditError) -> None:
        assert self.loop is not None
        await self.loop.estop.trip("audit_failure", str(err))
        self.exit_code = 74  # EX_IOERR: systemd restarts it; a log behind its mark is refused then
        self.request_stop(f"the audit log failed: {err}")

    async def _hand_over(self, loop: ControlLoop) -> None:
        """On stop: leave the plant in its safe state; the PLC's dead-man does the rest."""
        await loop.settle_writes()
        if loop.modes.mode in WRITING and self.settings.gateway.on_stop == "safe_outputs":
            with contextlib.suppress(TransportError):
                await loop.write_safe(TripEvent("shutdown", "gateway stopping", "gateway"))

    # ---- operator commands (edgewarden/gateway/ops/operator.py) -----------------------------------
    async def _on_denied(self, req: dict[str, Any], why: str) -> None:
        await operator.audit_denied(self, req, why)
        self.log.warning("operator command denied", cmd=req.get("cmd"), actor=operator.actor(req), cid=req.get("cid"),
                         error=why)
