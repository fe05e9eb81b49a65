"""The gateway's mode state machine: one place, every transition audited.

    INHIBITED ──healthy──▶ READY ──start──▶ AUTO ⇄ FALLBACK
        ▲                    │               ▲ ▼       ▼
        │                    └──────────▶ MANUAL ◀─────┘
        └────reset──── ESTOP ◀──── any mode (trip, latched)

Start-up is INHIBITED: nothing but the heartbeat is written until the plant reads
healthy, the policy is loaded and an explicit start is given (or auto_start). ESTOP
latches: only a reset leaves it, and a reset goes to INHIBITED, never back to AUTO.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass

from edgewarden.gateway.errors import GatewayError


class Mode(enum.IntEnum):
    INHIBITED = 0
    READY = 1
    AUTO = 2
    FALLBACK = 3
    MANUAL = 4
    ESTOP = 5


ALLOWED: dict[Mode, frozenset[Mode]] = {
    Mode.INHIBITED: frozenset({Mode.READY, Mode.ESTOP}),
    Mode.READY: frozenset({Mode.INHIBITED, Mode.AUTO, Mode.MANUAL, Mode.ESTOP}),
    Mode.AUTO: frozenset({Mode.READY, Mode.FALLBACK, Mode.MANUAL, Mode.ESTOP}),
    Mode.FALLBACK: frozenset({Mode.READY, Mode.AUTO, Mode.MANUAL, Mode.ESTOP}),
    Mode.MANUAL: frozenset({Mode.READY, Mode.AUTO, Mode.FALLBACK, Mode.ESTOP}),
    Mode.ESTOP: frozenset({Mode.INHIBITED}),
}

#: Modes in which actions reach the plant (policy or fallback, always through the shield).
WRITING: frozenset[Mode] = frozenset({Mode.AUTO, Mode.FALLBACK})


class ModeRefused(GatewayError):
    """An illegal or premature transition; the message says why."""

    exit_code = 2


@dataclass(frozen=True)
class Transition:
    source: Mode
    target: Mode
    reason: str
    actor: str
    t_wall: float


class ModeMachine:
    """Owns the current mode. ``on_transition`` is called synchronously for every change."""

    def __init__(self, on_transition: Callable[[Transition], None] | None = None) -> None:
        self._mode = Mode.INHIBITED
        self._listeners: list[Callable[[Transition], None]] = []
        if on_transition is not None:
            self._listeners.append(on_transition)

    @property
    def mode(self) -> Mode:
        return self._mode

    def subscribe(self, listener: Callable[[Transition], None]) -> None:
        self._listeners.append(listener)

    def request(self, target: Mode, *, reason: str, actor: str) -> Transition:
        """Move to ``target`` or raise ModeRefused naming the rule."""
        source = self._mode
        if target == source:
            raise ModeRefused(f"already in {source.name}")
        if target not in ALLOWED[source]:
            allowed = ", ".join(sorted(m.name for m in ALLOWED[source]))
            raise ModeRefused(f"cannot go from {source.name} to {target.name} (allowed from "
                              f"{source.name}: {allowed})")
        self._mode = target
        transition = Transition(source, target, reason, actor, time.time())
        for listener in self._listeners:
            listener(transition)
        return transition
