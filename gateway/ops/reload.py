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

An accepted reload is *staged* and applied by the app between two cycles (the healthy-
cycle callback runs after a cycle's writes and before the next tick), never mid-cycle,
through ``ControlLoop.apply_settings``. A new model is loaded by the model commands
(gateway/policy/registry.py), not by a reload: a changed [policy] section is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.config import LoadedConfig, Settings
from gateway.errors import ConfigError, PolicyError
from gateway.policy.contract import check_against

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

