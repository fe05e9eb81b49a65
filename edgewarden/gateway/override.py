"""Human override: who holds MANUAL, and where control goes back to.

MANUAL is held by the operator (``override take``), by the PLC's hand/auto selector in
hand (``plc``), or by a PLC that stopped accepting the gateway's setpoints
(``plc_remote``: remote off or its watchdog tripped, with an alarm). The gateway leaves
MANUAL only when nobody holds it, back to the mode it came from (READY, AUTO or FALLBACK;
FALLBACK's controller starts afresh). Operator setpoints, if given, pass the shield every
cycle while only the operator holds MANUAL; while the PLC holds it nothing of the
gateway's is applied, so nothing but the heartbeat is written.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgewarden.gateway.modes import WRITING, Mode, ModeMachine, ModeRefused
from edgewarden.gateway.ops.metrics import Metrics

PLC_HOLDERS = frozenset({"plc", "plc_remote"})  # MANUAL held by the PLC: nothing of ours is applied
PLC_NOT_ACCEPTING = "plc_not_accepting"  # the alarm while the PLC does not apply our setpoints


class Override:
    def __init__(self, modes: ModeMachine, metrics: Metrics, actions: list[str],
                 alarm: Callable[[str, bool, str], None], resume_fallback: Callable[[], None]) -> None:
        self._modes = modes
        self._metrics = metrics
        self._actions = list(actions)
        self._alarm = alarm
        self._resume_fallback = resume_fallback
        self.held_by: set[str] = set()
        self.setpoints: np.ndarray | None = None  # the operator's, in action order
        self._resume_mode = Mode.AUTO
        self._accepts_shown: bool | None = None

    @property
    def operator_setpoints(self) -> np.ndarray | None:
        """The operator's setpoints while they apply (the PLC does not hold MANUAL)."""
        return None if self.held_by & PLC_HOLDERS else self.setpoints

    def operator_takes(self, actor: str, setpoints: dict[str, float] | None, current: np.ndarray) -> None:
        """The operator takes manual control; setpoints not given keep the current action."""
        mode = self._modes.mode
        if mode in (Mode.ESTOP, Mode.INHIBITED):
            raise ModeRefused(f"manual refused: the gateway is {mode.name}")
        if setpoints is not None:
            unknown = sorted(set(setpoints) - set(self._actions))
            if unknown:
                raise ModeRefused(f"manual refused: {unknown} are not actions ({self._actions})")
            sp = current.copy()
            for name, value in setpoints.items():
                sp[self._actions.index(name)] = float(value)
            self.setpoints = sp
        self.held_by.add("operator")
        self._enter(f"operator: {actor}", actor)

    def operator_releases(self, actor: str) -> None:
        """The operator hands control back (bumpless: the shield ramps from the applied action)."""
        if "operator" not in self.held_by:
            raise ModeRefused("auto refused: the operator does not hold manual control")
        self.held_by.discard("operator")
        self.setpoints = None
        self._leave(actor)

    def follow_hand_auto(self, plc_auto: bool) -> None:
        if not plc_auto and "plc" not in self.held_by:
            self.held_by.add("plc")
            self._enter("PLC hand/auto selector in hand", "plc")
        elif plc_auto and "plc" in self.held_by:
            self.held_by.discard("plc")
            self._leave("plc")

    def acceptance_unknown(self) -> None:
        """This cycle's data cannot tell whether the PLC accepts (bad, stale or no data): the
        gauge says NaN rather than the last answer; the mode is left as it is."""
        if self._accepts_shown is not None:
            self._accepts_shown = None
            self._metrics.plc_accepts.set(float("nan"))

    def follow_plc_acceptance(self, accepts: bool) -> None:
        """The PLC stopped applying our setpoints: do not claim to control (MANUAL, held by
        the PLC, with an alarm); hand back when it accepts again."""
        if accepts is not self._accepts_shown:
            self._accepts_shown = accepts
            self._metrics.plc_accepts.set(1.0 if accepts else 0.0)
        if not accepts and "plc_remote" not in self.held_by and self._modes.mode in WRITING:
            self.held_by.add("plc_remote")
            self._alarm(PLC_NOT_ACCEPTING, True, "the PLC does not accept the gateway's setpoints")
            self._enter("PLC does not accept the gateway's setpoints (remote off or watchdog tripped)", "plc")
        elif accepts and "plc_remote" in self.held_by:
            self.held_by.discard("plc_remote")
            self._alarm(PLC_NOT_ACCEPTING, False, "the PLC accepts the gateway's setpoints again")
            self._leave("plc")

    def _enter(self, reason: str, actor: str) -> None:
        mode = self._modes.mode
        if mode in (Mode.READY, Mode.AUTO, Mode.FALLBACK):
            self._resume_mode = mode
            self._modes.request(Mode.MANUAL, reason=reason, actor=actor)

    def _leave(self, actor: str) -> None:
        if self.held_by or self._modes.mode != Mode.MANUAL:
            return
        target = self._resume_mode
        if target == Mode.FALLBACK:
            self._resume_fallback()
        self._modes.request(target, reason="hand-back (ramps from the applied action)", actor=actor)
