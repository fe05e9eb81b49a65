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
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import structlog

from gateway.audit.checkpoint import Signer
from gateway.audit.writer import AuditWriter
from gateway.config import LoadedConfig, LoggingSection, Settings
from gateway.cycle import ControlLoop
from gateway.errors import AuditError, PolicyError, TransportError
from gateway.io.composite import CompositeTransport
from gateway.io.tags import TagMap
from gateway.modes import WRITING, ModeMachine, ModeRefused, Transition
from gateway.ops.control import ControlServer
from gateway.ops.metrics import Metrics
from gateway.ops.sdnotify import Notifier
from gateway.policy.onnx_policy import OnnxPolicy
from gateway.policy.registry import load_verified
from gateway.safety.estop import TripEvent

_NOISY = ("asyncua", "pymodbus")


def configure_logging(cfg: LoggingSection) -> None:
    level = getattr(logging, cfg.level.upper())
    renderer: Any = (structlog.processors.JSONRenderer() if cfg.format == "json"
                     else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    for name in _NOISY:  # protocol libraries log every revised parameter at WARNING
        logging.getLogger(name).setLevel(logging.ERROR)


def load_policy(s: Settings) -> OnnxPolicy:
    """The configured model, verified (signature, pin, contract, graph, warm-up)."""
    return load_verified(s, s.policy.path, s.policy.sha256)


class Gateway:
    """One daemon. ``run()`` returns when stopped (SIGTERM/SIGINT or ``request_stop``)."""

    def __init__(self, loaded: LoadedConfig, *, on_ready: Callable[[Gateway], None] | None = None) -> None:
        self.loaded = loaded
        self.settings = loaded.settings
        self.on_ready = on_ready
        self.log = structlog.get_logger("edgewarden")
        self._stop = asyncio.Event()
        self.metrics_port: int | None = None
        self.loop: ControlLoop | None = None
        self.audit: AuditWriter | None = None

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        s = self.settings
        tags = TagMap.from_settings(s)
        policy = load_policy(s)
        aio = asyncio.get_running_loop()
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
        )
        audit.open()
        self.audit = audit
        metrics = Metrics()
        transport = CompositeTransport(tags, s.connections)
        control: ControlServer | None = None
        try:
            audit.append_durable("config_load", {"path": str(self.loaded.path), "sha256": self.loaded.sha256,
                                                 "gateway": s.gateway.name, "obs_tags": list(s.policy.observations),
                                                 "act_tags": list(s.policy.actions)})
            audit.append_durable("model_load", {"path": str(policy.path), "sha256": policy.sha256,
                                                "algorithm": policy.contract.algorithm})
            if s.metrics.enabled:
                self.metrics_port = metrics.serve(s.metrics.host, s.metrics.port)
            await transport.connect()
            modes = ModeMachine()
            notifier = Notifier(min_watchdog_interval_s=0.1)
            loop = ControlLoop(s, tags, transport, policy, modes, audit, metrics,
                               on_healthy_cycle=notifier.watchdog)
            self.loop = loop
            modes.subscribe(self._on_transition)
            loop.estop.add_handler("audit", self._audit_trip)
            control = ControlServer(s.control.socket, self._commands())
            await control.start()
            self._install_signals(aio)
            self.log.info("gateway started", name=s.gateway.name, cycle_hz=s.gateway.cycle_hz,
                          model=policy.sha256[:16], metrics_port=self.metrics_port,
                          control=str(s.control.socket))
            if self.on_ready is not None:
                self.on_ready(self)
            notifier.ready(f"cycling at {s.gateway.cycle_hz:g} Hz, mode {modes.mode.name}")
            watcher = asyncio.create_task(self.watch_model_file()) if s.policy.watch else None
            await loop.run(self._stop)
            if watcher is not None:
                watcher.cancel()
            notifier.stopping("handing the plant to its safe state")
            await self._hand_over(loop)
            notifier.close()
        finally:
            if control is not None:
                await control.close()
            await transport.close()
            metrics.close()
            with contextlib.suppress(AuditError):
                audit.append("shutdown", {"mode": self.loop.modes.mode.name if self.loop else None})
            audit.close()
        self.log.info("gateway stopped", cycles=self.loop.stats.cycles if self.loop else 0)
        return 0

    # ---- wiring ---------------------------------------------------------------------
    def _install_signals(self, aio: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                aio.add_signal_handler(sig, self.request_stop)

    def _on_transition(self, t: Transition) -> None:
        assert self.audit is not None and self.loop is not None
        with contextlib.suppress(AuditError):  # a failed log trips through on_fatal
            self.audit.append("mode", {"from": t.source.name, "to": t.target.name,
                                       "reason": t.reason, "actor": t.actor})
        self.loop.metrics.set_mode(t.target)
        self.log.info("mode", source=t.source.name, target=t.target.name, reason=t.reason, actor=t.actor)

    async def _audit_trip(self, event: TripEvent) -> None:
        """Make the trip durable before it is acknowledged."""
        assert self.audit is not None
        await self.audit.append_durable_async("trip", {"code": event.code, "message": event.message,
                                                       "actor": event.actor})
        self.log.error("e-stop", code=event.code, message=event.message, actor=event.actor)

    def _audit_failed(self, err: AuditError) -> None:
        """An audit write/fsync failure is fatal to AUTO: trip to the safe state."""
        if self.loop is not None:
            asyncio.ensure_future(self.loop.estop.trip("audit_failure", str(err)))

    async def _hand_over(self, loop: ControlLoop) -> None:
        """On stop: leave the plant in its safe state; the PLC's dead-man does the rest."""
        if loop.modes.mode in WRITING:
            with contextlib.suppress(TransportError):
                await loop.write_safe(TripEvent("shutdown", "gateway stopping", "gateway"))

    # ---- operator commands ----------------------------------------------------------
    def _commands(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        return {"status": self._cmd_status, "estop": self._cmd_estop, "reset": self._cmd_reset,
                "start": self._cmd_start, "manual": self._cmd_manual, "auto": self._cmd_auto,
                "model": self._cmd_model}

    def _actor(self, req: dict[str, Any]) -> str:
        return f"{req['actor']} (uid {req.get('uid')})"

    async def _cmd_status(self, req: dict[str, Any]) -> dict[str, Any]:
        loop = self.loop
        assert loop is not None and self.audit is not None
        snap = loop.snap
        tags = loop.tags
        audit_stats = self.audit.stats()
        return {
            "mode": loop.modes.mode.name,
            "stats": asdict(loop.stats),
            "trips": loop.estop.count,
            "last_trip": None if loop.estop.last is None else asdict(loop.estop.last),
            "verdict": loop.checker.verdict.code,
            "manual_by": sorted(loop.manual_by),
            "interlocks": loop.interlocks.active_names(),
            "values": {n: (None if v != v else v) for n, v in zip(tags.readable, snap.values.tolist())},
            "action": dict(zip(self.settings.policy.actions, loop.action.tolist())),
            "audit_records": audit_stats.records_written,
            "links": {k: asdict(v) for k, v in loop.transport.health().items()},
            "pid": os.getpid(),
            "metrics_port": self.metrics_port,
        }

    async def _cmd_estop(self, req: dict[str, Any]) -> dict[str, Any]:
        assert self.loop is not None
        reason = str(req.get("reason") or "operator e-stop")
        tripped = await self.loop.estop.trip("operator_estop", reason, actor=self._actor(req))
        return {"mode": self.loop.modes.mode.name, "tripped": tripped}

    async def _cmd_reset(self, req: dict[str, Any]) -> dict[str, Any]:
        assert self.loop is not None and self.audit is not None
        self.loop.request_reset(self._actor(req))
        await self.audit.append_durable_async("operator", {"cmd": "reset", "actor": self._actor(req)})
        return {"mode": self.loop.modes.mode.name}

    async def _cmd_start(self, req: dict[str, Any]) -> dict[str, Any]:
        assert self.loop is not None and self.audit is not None
        self.loop.request_start(self._actor(req))
        await self.audit.append_durable_async("operator", {"cmd": "start", "actor": self._actor(req)})
        return {"mode": self.loop.modes.mode.name}

    async def _cmd_manual(self, req: dict[str, Any]) -> dict[str, Any]:
        assert self.loop is not None and self.audit is not None
        setpoints = req.get("setpoints")
        if setpoints is not None and not (isinstance(setpoints, dict)
                                          and all(isinstance(v, (int, float)) for v in setpoints.values())):
            raise ModeRefused("manual refused: setpoints must be an object {action: number}")
        self.loop.request_manual(self._actor(req), setpoints)
        await self.audit.append_durable_async("operator", {"cmd": "manual", "actor": self._actor(req),
                                                           "setpoints": setpoints})
        return {"mode": self.loop.modes.mode.name}

    async def _cmd_auto(self, req: dict[str, Any]) -> dict[str, Any]:
        assert self.loop is not None and self.audit is not None
        self.loop.request_auto(self._actor(req))
        await self.audit.append_durable_async("operator", {"cmd": "auto", "actor": self._actor(req)})
        return {"mode": self.loop.modes.mode.name}

    async def _cmd_model(self, req: dict[str, Any]) -> dict[str, Any]:
        """model load|shadow FILE [sha256], promote, rollback, status — validation runs in a
        worker thread (warm-up included) so the cycle keeps its deadlines meanwhile."""
        assert self.loop is not None
        models = self.loop.models
        action = req.get("action")
        actor = self._actor(req)
        if action in ("load", "shadow"):
            path = req.get("path")
            if not isinstance(path, str) or not path:
                raise PolicyError(f"model {action} needs a file path")
            sha = req.get("sha256") or None
            fn = models.load if action == "load" else models.start_shadow
            await asyncio.to_thread(fn, Path(path), actor, sha)
        elif action == "promote":
            models.promote(actor)
        elif action == "rollback":
            models.rollback(actor, str(req.get("reason") or "operator rollback"))
        elif action != "status":
            raise PolicyError(f"unknown model action {action!r} (load, shadow, promote, rollback, status)")
        return {"mode": self.loop.modes.mode.name, "models": models.describe()}

    async def watch_model_file(self) -> None:
        """File drop: a changed model file is validated and loaded like `model load`."""
        assert self.loop is not None
        path = self.settings.policy.path

        def stamp() -> tuple[int, int] | None:
            try:
                st = path.stat()
            except OSError:
                return None
            return st.st_mtime_ns, st.st_size

        last = stamp()
        while not self._stop.is_set():
            await asyncio.sleep(1.0)
            now = stamp()
            if now is None or now == last:
                continue
            last = now
            try:
                await asyncio.to_thread(self.loop.models.load, path, "file drop", self.settings.policy.sha256)
            except PolicyError as exc:
                self.log.error("model file changed but was refused; the running model stays", error=str(exc))
