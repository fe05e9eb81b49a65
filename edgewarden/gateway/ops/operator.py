"""The control socket's commands: one table, one audited wrapper.

Every command that can change anything leaves one ``operator`` audit record, made durable
before the reply, with the actor (the kernel's identity first), the command, its
``outcome`` and the reason given:

    accepted  written after the action, saying what happened (``tripped``, the reload's
              ``result`` and ``keys``, ...); the e-stop's safe write never waits for the log
    refused   the command raised (ModeRefused, ConfigError, PolicyError): the record and a
              log line carry the error, and the control server answers it as an error reply
    denied    the sender may not change anything: ``operator_denied`` (audit_denied)

Model commands are also recorded by the registry (model_load, model_promote, ...);
``status`` changes nothing and is not recorded. Requests arrive validated against their
schema (edgewarden/gateway/ops/requests.py), with the peer's uid and user name added by the server.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edgewarden.gateway.errors import ConfigError, GatewayError, PolicyError
from edgewarden.gateway.io.tags import Quality
from edgewarden.gateway.logs import get_logger
from edgewarden.gateway.modes import ModeRefused

if TYPE_CHECKING:
    from edgewarden.gateway.audit import AuditWriter
    from edgewarden.gateway.config import Settings
    from edgewarden.gateway.cycle import ControlLoop
    from edgewarden.gateway.ops.reload import Outcome

Reply = dict[str, Any]
_log = get_logger("edgewarden.operator")


class Host(Protocol):
    """What the commands act on: the running gateway (edgewarden/gateway/app.py)."""

    settings: Settings
    metrics_port: int | None

    @property
    def loop(self) -> ControlLoop | None: ...

    @property
    def audit(self) -> AuditWriter | None: ...

    async def reload_async(self) -> Outcome: ...

    @property
    def stopping(self) -> bool: ...

    stop_reason: str


def actor(req: dict[str, Any]) -> str:
    """Who sent it: the kernel's word (user and uid, which a client cannot forge) first,
    then the name the operator gave, when it differs: ``root (uid 0) as alice``."""
    user, name = req.get("user", "?"), req.get("actor")
    who = f"{user} (uid {req.get('uid')})"
    return who if name in (None, user) else f"{who} as {name}"


# what a command was asked to do, kept on its record whether it was accepted or refused
_ARGUMENTS = ("action", "path", "sha256", "band", "force", "signal", "amplitude", "hold_s", "duration_s", "seed")


def operator_record(req: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"cmd": req["cmd"], "actor": actor(req), "operator": req["actor"], "uid": req.get("uid"),
            "user": req.get("user"), "reason": str(req.get("reason") or ""), "cid": req.get("cid"),
            **{k: req[k] for k in _ARGUMENTS if req.get(k) is not None}, **extra}


def _running(host: Host) -> tuple[ControlLoop, AuditWriter]:
    loop, audit = host.loop, host.audit
    assert loop is not None and audit is not None  # the socket opens after both exist
    return loop, audit


# ---- the commands: each returns (reply, extra fields for its audit record) -------------
async def status(host: Host, req: dict[str, Any]) -> tuple[Reply, dict[str, Any]]:
    loop, audit = _running(host)
    s = host.settings
    snap, tags = loop.snap, loop.tags
    values, quality = snap.values.tolist(), snap.quality.tolist()
    rows = []
    for i, (name, v) in enumerate(zip(tags.readable, values, strict=True)):
        lim = s.safety.limits.get(name)
        rows.append({"name": name, "value": None if v != v else v, "units": s.tags[name].units,
                     "quality": Quality(int(quality[i])).name,
                     "hard": None if lim is None or lim.hard is None else list(lim.hard),
                     "soft": None if lim is None or lim.soft is None else list(lim.soft)})
    age = loop.stats.data_age_s
    return {
        "mode": loop.modes.mode.name,
        "gateway": s.gateway.name,
        "policy": {"kind": s.policy.kind, "algorithm": loop.policy.algorithm, "sha256": loop.policy.sha256},
        "writes": loop.outputs.writes,  # false: kind = "monitor", nothing goes to the plant
        "period_s": loop.period,
        "tags": rows,
        "stats": asdict(loop.stats),
        "trips": loop.estop.count,
        "last_trip": None if loop.estop.last is None else asdict(loop.estop.last),
        "verdict": loop.checker.verdict.code,
        "manual_by": sorted(loop.manual_by),
        "interlocks": loop.interlocks.active_names(),
        "fallback": loop.safety.supervisor.hand_back(time.monotonic()) if loop.modes.mode.name == "FALLBACK" else None,
        "models": loop.models.describe(),
        "authority": loop.safety.trust.describe(time.monotonic()) if loop.safety.trust.applies else None,
        "excitation": loop.excitation.describe(time.monotonic()),
        "plc_accepts": loop.authority.accepts,  # None: not configured (no plc_remote/watchdog tag)
        "alarms": dict(loop.alarms),
        "data_age_s": None if age != age else age,
        "values": {n: (None if v != v else v) for n, v in zip(tags.readable, values, strict=True)},
        "action": dict(zip(s.policy.actions, loop.action.tolist(), strict=True)),
        "audit_records": audit.stats().records_written,
        "links": {k: asdict(v) for k, v in loop.transport.health().items()},
        "pid": os.getpid(),
        "metrics_port": host.metrics_port,
    }, {}


async def estop(host: Host, req: dict[str, Any]) -> tuple[Reply, dict[str, Any]]:
    loop, _ = _running(host)
    tripped = await loop.estop.trip("operator_estop", str(req.get("reason") or "operator e-stop"), actor=actor(req))
    return {"mode": loop.modes.mode.name, "tripped": tripped}, {"tripped": tripped}


async def reset(host: Host, req: dict[str, Any]) -> tuple[Reply, dict[str, Any]]:
    loop, _ = _running(host)
    loop.request_reset(actor(req))
    return {"mode": loop.modes.mode.name}, {}


async def start(host: Host, req: dict[str, Any]) -> tuple[Reply, dict[str, Any]]:
    loop, _ = _running(host)
    loop.request_start(actor(req))
    return {"mode": loop.modes.mode.name}, {}


async def manual(host: Host, req: dict[str, Any]) -> tuple[Reply, dict[str, Any]]:
    loop, _ = _running(host)
    setpoints = req.get("setpoints")  # checked by the request schema
    loop.request_manual(actor(req), setpoints)
    return {"mode": loop.modes.mode.name}, {"setpoints": setpoints}


async def auto(host: Host, req: dict[str, Any]) -> tuple[Reply, dict[str, Any]]:
    loop, _ = _running(host)
    loop.request_auto(actor(req))
    return {"mode": loop.modes.mode.name}, {}


async def override(host: Host, req: dict[str, Any]) -> tuple[Reply, dict[str, Any]]:
    """``override take`` = manual (human override), ``override release`` = hand back."""
    return await (manual if req["action"] == "take" else auto)(host, req)


async def reload(host: Host, req: dict[str, Any]) -> tuple[Reply, dict[str, Any]]:
    """The same as SIGHUP, answered: staged (applied between two cycles), unchanged or refused."""
    outcome = await host.reload_async()
    if outcome.result == "refused":
        raise ConfigError(outcome.message)
    loop = host.loop
    return ({"mode": loop.modes.mode.name if loop is not None else None, "result": outcome.result,
             "staged": outcome.keys, "message": outcome.message},
            {"result": outcome.result, "keys": outcome.keys})


async def model(host: Host, req: dict[str, Any]) -> tuple[Reply, dict[str, Any]]:
    """model load|shadow FILE [sha256], promote, rollback, status: validation runs in a
    worker thread (warm-up included, bounded by ``[policy] load_timeout_s``) so the cycle
    keeps its deadlines meanwhile."""
    loop, _ = _running(host)
    models = loop.models
    action, who = req.get("action"), actor(req)
    if action in ("load", "shadow"):
        path = req.get("path")
        if not isinstance(path, str) or not path:
            raise PolicyError(f"model {action} needs a file path")
        fn = models.load if action == "load" else models.start_shadow
        await fn(Path(path), who, req.get("sha256") or None)
    elif action == "promote":
        reason = str(req.get("reason") or "").strip()
        if req.get("force") and not reason:
            raise PolicyError("promote --force needs --reason TEXT: overriding the evidence is on record, with why")
        models.promote(who, force_reason=reason if req.get("force") else None)
    elif action == "rollback":
        models.rollback(who, str(req.get("reason") or "operator rollback"))
    elif action == "authority":
        trust = loop.safety.trust
        if not trust.applies:
            raise PolicyError("authority refused: the active controller is not a learned policy (it is the "
                              "incumbent itself: no band)")
        if req.get("band") is None:
            raise PolicyError('model authority needs a band: ACTION=VALUE pairs, "full" or "start"')
        try:
            trust.set_band(req["band"], who, str(req.get("reason") or "operator"))
        except ValueError as exc:
            raise PolicyError(f"authority refused: {exc}") from None
    elif action != "status":
        raise PolicyError(f"unknown model action {action!r} (load, shadow, promote, rollback, status, authority)")
    return {"mode": loop.modes.mode.name, "models": models.describe(),
            "authority": loop.safety.trust.describe(time.monotonic())}, {}


async def excite(host: Host, req: dict[str, Any]) -> tuple[Reply, dict[str, Any]]:
    """excite start|stop|status: the operator's test signal on the running controller's
    output (edgewarden/gateway/policy/excitation.py), in AUTO only."""
    loop, _ = _running(host)
    ex, now, who = loop.excitation, time.monotonic(), actor(req)
    action = req.get("action")
    extra: dict[str, Any] = {}
    if action == "start":
        if loop.modes.mode.name != "AUTO":
            raise ModeRefused(f"excite start needs AUTO: it excites the running controller's output (mode is "
                              f"{loop.modes.mode.name})")
        if loop.alarms:  # it would stop on the next cycle: say why now
            raise ModeRefused(f"excite start refused: alarms active ({', '.join(loop.alarms)})")
        held = sorted(set(getattr(loop.policy, "holds", ())) & set(req.get("amplitude") or {}))
        if held:
            raise ModeRefused(f"excite start refused: the {loop.policy.algorithm} controller holds "
                              f"{', '.join(held)} at what was last written (no loop in [policy.pid]), so the offsets "
                              "would add up; excite an action a loop or a model proposes")
        seed = req.get("seed")
        seed = int.from_bytes(os.urandom(4), "big") if seed is None else seed
        try:
            ex.start(str(req.get("signal", "prbs")), dict(req.get("amplitude") or {}), float(req.get("hold_s", 5.0)),
                     float(req.get("duration_s", 600.0)), seed, who, str(req.get("reason") or ""), now)
        except ValueError as exc:
            raise PolicyError(f"excite start refused: {exc}") from None
        extra["seed"] = seed  # the sequence can be replayed from the record
    elif action == "stop":
        if not ex.stop(f"operator: {req.get('reason') or 'stop'}", who):
            raise PolicyError("excite stop: no excitation is running")
    return {"mode": loop.modes.mode.name, "excitation": ex.describe(now)}, extra


@dataclass(frozen=True)
class Command:
    run: Callable[[Host, dict[str, Any]], Awaitable[tuple[Reply, dict[str, Any]]]]
    audited: bool = True


COMMANDS: dict[str, Command] = {
    "status": Command(status, audited=False),
    "estop": Command(estop),
    "reset": Command(reset),
    "start": Command(start),
    "manual": Command(manual),
    "auto": Command(auto),
    "override": Command(override),
    "reload": Command(reload),
    "model": Command(model),
    "excite": Command(excite),
}


async def _audited(host: Host, command: Command, req: dict[str, Any]) -> Reply:
    audit = host.audit
    assert audit is not None
    if not command.audited:
        return (await command.run(host, req))[0]
    try:
        if host.stopping and req["cmd"] != "estop":  # the plant is being handed to its safe state
            raise ModeRefused(f"{req['cmd']} refused: the gateway is stopping ({host.stop_reason})")
        reply, extra = await command.run(host, req)
    except GatewayError as exc:
        error = str(exc)
        _log.warning("operator command refused", cmd=req["cmd"], actor=actor(req), error=error)
        await audit.append_durable_async("operator", operator_record(req, outcome="refused", error=error))
        raise
    await audit.append_durable_async("operator", operator_record(req, outcome="accepted", **extra))
    _log.info("operator command", cmd=req["cmd"], actor=actor(req))
    return reply


def handlers(host: Host) -> dict[str, Callable[[dict[str, Any]], Awaitable[Reply]]]:
    """The control server's table: every command behind the audited wrapper."""
    return {name: partial(_audited, host, command) for name, command in COMMANDS.items()}


async def audit_denied(host: Host, req: dict[str, Any], why: str) -> None:
    """A command refused for who sent it is on record too: who tried what."""
    audit = host.audit
    assert audit is not None
    await audit.append_durable_async("operator_denied", {
        "cmd": req.get("cmd"), "operator": req.get("actor"), "uid": req.get("uid"),
        "user": req.get("user"), "cid": req.get("cid"), "error": why})
