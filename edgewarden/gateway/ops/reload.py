"""SIGHUP: reload the configuration file, validated, or refuse it with a clear reason.

What may change while the plant runs (no restart, no bump):

    safety.limits       hard/soft limits and max_rate of observed tags
    safety.actions      min/max/max_rate/safe of actions (not the ``applied`` tag or its tolerance)
    safety.interlocks   add, remove or change interlocks
    safety.fallback     fallback tuning (controller, PID gains, thresholds, OOD margins)
    logging.level

Everything else (tags, connections, policy, audit, metrics, control socket, cycle rate,
...) needs a restart: the reload is refused and the message names every key that
differs. A refused reload changes nothing. A reload that would change the set of tags
the checker monitors (a limit on a tag that had none) is refused too: the rate-of-change
and staleness history of the running checker would not carry over.

An accepted reload is *staged* (:class:`Reloader`) and applied between two cycles (the
app's healthy-cycle callback runs after a cycle's writes and before the next tick), never
mid-cycle, through ``ControlLoop.apply_settings``. Every outcome (applied, unchanged,
refused) is logged, counted in ``edgewarden_config_reloads_total``, told to systemd and
audited (``config_load`` with ``reload: true``, or ``config_reload_refused``). A new
model is loaded by the model commands (edgewarden/gateway/policy/registry.py), not by a reload: a
changed [policy] section is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgewarden.gateway.config import LoadedConfig, Settings, load_config
from edgewarden.gateway.errors import AuditError, ConfigError, PolicyError
from edgewarden.gateway.logs import configure_logging
from edgewarden.gateway.policy.contract import check_against
from edgewarden.gateway.safety.checker import monitored_tags

if TYPE_CHECKING:
    from edgewarden.gateway.audit import AuditWriter
    from edgewarden.gateway.cycle import ControlLoop
    from edgewarden.gateway.ops.metrics import Metrics
    from edgewarden.gateway.ops.sdnotify import Notifier

RELOADABLE_SAFETY = ("limits", "actions", "interlocks", "fallback")


def _diff(old: Any, new: Any, prefix: str) -> list[str]:
    """Dotted key paths where two dumped configs differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            out += _diff(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key))
        return out
    return [] if old == new else [prefix]


def changed_keys(old: Settings, new: Settings) -> list[str]:
    return _diff(old.model_dump(mode="json"), new.model_dump(mode="json"), "")


def refused_keys(old: Settings, new: Settings) -> list[str]:
    """Changed keys that need a restart."""
    out = []
    for key in changed_keys(old, new):
        parts = key.split(".")
        if parts[0] == "safety" and len(parts) > 1 and parts[1] in RELOADABLE_SAFETY:
            if parts[1] == "actions" and parts[-1] in ("applied", "applied_tolerance"):
                out.append(key)
            continue
        if key == "logging.level":
            continue
        out.append(key)
    return out


def validate_reload(current: LoadedConfig, candidate: LoadedConfig, monitored: Callable[[Settings], list[str]],
                    contract: Any = None) -> list[str]:
    """The changed keys of an acceptable reload; raises ConfigError naming what is refused.

    ``contract``: the running model's; new action bounds must still contain its bounds.
    """
    old, new = current.settings, candidate.settings
    refused = refused_keys(old, new)
    if refused:
        raise ConfigError(f"{candidate.path}: reload refused, these keys cannot change while running "
                          f"(restart the service to apply them): {', '.join(refused)}; nothing was changed")
    if monitored(old) != monitored(new):
        raise ConfigError(f"{candidate.path}: reload refused: the change to safety.limits alters the set of "
                          "monitored tags (restart to apply it); nothing was changed")
    if contract is not None:
        s = new
        try:
            check_against(contract, [(t, s.tags[t].units) for t in s.policy.observations],
                          [(t, s.tags[t].units, s.safety.actions[t].min, s.safety.actions[t].max)
                           for t in s.policy.actions])
        except PolicyError as exc:
            raise ConfigError(f"{candidate.path}: reload refused: the running model would not fit the new "
                              f"safety.actions bounds ({exc}); nothing was changed") from None
    return changed_keys(old, new)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A config file read again: acceptable (``loaded``, its changed ``keys``) or ``refusal``."""

    loaded: LoadedConfig | None
    keys: list[str]
    refusal: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of a reload request: ``staged`` (applied between the next two cycles),
    ``unchanged`` or ``refused``; ``message`` says why, naming the keys."""

    result: str
    message: str
    keys: list[str]


class Reloader:
    """One running daemon's reloads: read and validate the file (in a worker thread when
    asked asynchronously), stage what is acceptable, apply it between two cycles."""

    def __init__(self, loaded: LoadedConfig, loop: ControlLoop, audit: AuditWriter, metrics: Metrics,
                 notifier: Notifier, log: Any) -> None:
        self.loaded = loaded
        self._loop = loop
        self._audit = audit
        self._metrics = metrics
        self._notifier = notifier
        self._log = log
        self._staged: Candidate | None = None

    def request(self) -> Outcome:
        """Validate the config file again; stage it or refuse it."""
        return self._stage(self.validate())

    async def request_async(self) -> Outcome:
        """The same, with the file read and validated in a worker thread (the cycle keeps its deadlines)."""
        return self._stage(await asyncio.to_thread(self.validate))

    def validate(self) -> Candidate:
        """Touches no running state (thread-safe)."""
        self._notifier.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
        try:
            candidate = load_config(self.loaded.path)
            keys = validate_reload(self.loaded, candidate, monitored_tags, self._loop.policy.contract)
        except ConfigError as exc:
            return Candidate(None, [], str(exc))
        return Candidate(candidate, keys)

    def _stage(self, candidate: Candidate) -> Outcome:
        if candidate.loaded is None:
            self._done("refused", candidate.refusal)
            return Outcome("refused", candidate.refusal, [])
        if not candidate.keys:
            message = f"{self.loaded.path}: nothing changed"
            self._done("unchanged", message)
            return Outcome("unchanged", message, [])
        self._staged = candidate
        return Outcome("staged", f"applied between two cycles: {', '.join(candidate.keys)}", candidate.keys)

    def apply_staged(self) -> None:
        """Between two cycles: the staged reload, if any, takes effect."""
        staged, self._staged = self._staged, None
        if staged is None or staged.loaded is None:
            return
        new = staged.loaded
        self._loop.apply_settings(new.settings)
        if new.settings.logging.level != self.loaded.settings.logging.level:
            configure_logging(new.settings.logging)
        self.loaded = new
        with contextlib.suppress(AuditError):  # a log that cannot be written trips through on_fatal
            self._audit.append("config_load", {"path": str(new.path), "sha256": new.sha256, "reload": True,
                                               "changed": staged.keys})
        self._done("applied", f"applied: {', '.join(staged.keys)}")

    def _done(self, result: str, message: str) -> None:
        self._metrics.reloads.labels(result=result).inc()
        if result == "refused":
            self._log.error("config reload refused", result=result, message=message)
            with contextlib.suppress(AuditError):
                self._audit.append("config_reload_refused", {"path": str(self.loaded.path), "error": message})
        else:
            self._log.info("config reload", result=result, message=message)
        self._notifier.notify("READY=1", f"STATUS=reload {result}: {message[:200]}")
