"""The loop's safety stack, built in one place from the settings.

The control loop builds it at start and again on an accepted reload
(:meth:`edgewarden.gateway.cycle.ControlLoop.apply_settings`); a rebuilt stack takes over the run-time
history of the one it replaces, so staleness, rate-of-change, frozen-value, intervention
and hand-back timing go on across the swap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgewarden.gateway.config import Settings
from edgewarden.gateway.io.tags import TagMap
from edgewarden.gateway.modes import ModeMachine
from edgewarden.gateway.safety.checker import ObservationChecker
from edgewarden.gateway.safety.interlocks import Interlocks
from edgewarden.gateway.safety.shield import ActionShield
from edgewarden.gateway.safety.supervisor import Supervisor
from edgewarden.gateway.safety.trust import TrustRegion


@dataclass(frozen=True)
class SafetyStack:
    checker: ObservationChecker
    shield: ActionShield
    interlocks: Interlocks
    supervisor: Supervisor
    trust: TrustRegion

    def take_over(self, old: SafetyStack) -> None:
        """Carry the run-time history of the stack this one replaces."""
        self.checker.take_history(old.checker)
        self.supervisor.take_over(old.supervisor)
        self.trust.take_over(old.trust)


def build_stack(settings: Settings, tags: TagMap, policy: Any, modes: ModeMachine,
                on_trouble: Callable[[str, float], bool],
                on_authority: Callable[[dict[str, Any]], None]) -> SafetyStack:
    checker = ObservationChecker(settings, tags)
    shield = ActionShield(settings)
    trust = TrustRegion(settings, checker.names, on_authority, policy,
                        full=not settings.safety.authority.band_configured_model)
    return SafetyStack(checker, shield, Interlocks(settings, checker.names),
                       Supervisor(settings, checker.names, shield.hi - shield.lo, policy, modes, on_trouble), trust)
