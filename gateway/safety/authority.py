"""Whether the PLC applies what the gateway writes: its authority read as an input.

The PLC stays the authority: it applies the gateway's setpoints only while it says so
(its remote/accepting flag, and its heartbeat watchdog not tripped). Two checks, both
optional and both from tags the gateway already reads every cycle:

- **Accepting**: ``safety.plc_remote_tag`` (true = the PLC applies the gateway's
  setpoints) and ``safety.plc_watchdog_tag`` (true = its dead-man watchdog has tripped).
  The control cycle does not claim to control while the PLC does not accept: from AUTO
  or FALLBACK it goes to MANUAL (held by ``plc``), and hands back when the PLC accepts.
- **Applied**: per action with an ``applied`` tag of its own, the written setpoint and
  the applied value differ by more than ``applied_tolerance`` (default 5 % of the
  action's span) for longer than ``safety.applied_settle_s``: an alarm naming the action,
  raised and cleared once each (audited by the cycle, shown in status and metrics).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gateway.config import Settings
from gateway.io.tags import Quality, Snapshot, TagMap


@dataclass(frozen=True)
class AlarmChange:
    name: str  # "setpoint_mismatch:<action>"
    raised: bool
    message: str


class PlcAuthority:
    def __init__(self, settings: Settings, tags: TagMap, monitored: list[str]) -> None:
        s = settings.safety
        self._remote = monitored.index(s.plc_remote_tag) if s.plc_remote_tag else -1
        self._watchdog = monitored.index(s.plc_watchdog_tag) if s.plc_watchdog_tag else -1
        self.configured = self._remote >= 0 or self._watchdog >= 0
        self.accepts: bool | None = None  # None: not configured, or not read good yet
        # actions whose applied value is a tag of its own
        checked = [a for a in settings.policy.actions if (s.actions[a].applied or a) != a]
        self._pos = np.array([settings.policy.actions.index(a) for a in checked], dtype=np.intp)
        self._names = checked
        self._slots = tags.indices([s.actions[a].applied or a for a in checked])
        self._tol = np.array([s.actions[a].applied_tolerance if s.actions[a].applied_tolerance is not None
                              else 0.05 * (s.actions[a].max - s.actions[a].min) for a in checked])
        self._settle_s = s.applied_settle_s
        self._since = np.full(len(checked), math.nan)  # when each mismatch began (NaN: none)
        self._raised = [False] * len(checked)  # its alarm is raised
        self._pending = False  # a mismatch was seen last time (open timers or alarms)

    def read(self, monitored: np.ndarray) -> bool | None:
        """Whether the PLC accepts the gateway's setpoints, from this cycle's (good) values."""
        if not self.configured:
            return None
        remote = self._remote < 0 or bool(monitored[self._remote] != 0.0)
        tripped = self._watchdog >= 0 and bool(monitored[self._watchdog] != 0.0)
        self.accepts = remote and not tripped
        return self.accepts

    def compare(self, written: np.ndarray, snap: Snapshot, now: float, writing: bool) -> list[AlarmChange]:
        """Written setpoints against the applied values; the alarms raised or cleared now.
        ``writing``: the gateway's setpoints are meant to be applied (AUTO/FALLBACK and a
        PLC that accepts); otherwise no mismatch is judged and open ones clear."""
        if not len(self._names):
            return []
        applied = snap.values[self._slots]
        good = snap.quality[self._slots] == Quality.GOOD
        target = written[self._pos]
        off = good & (np.abs(applied - target) > self._tol) if writing else np.zeros(len(self._names), bool)
        if not off.any() and not self._pending:
            return []  # the usual cycle: nothing off, nothing open
        changes: list[AlarmChange] = []
        for k, name in enumerate(self._names):
            alarm = f"setpoint_mismatch:{name}"
            if not off[k]:
                self._since[k] = math.nan
                if self._raised[k]:
                    self._raised[k] = False
                    changes.append(AlarmChange(alarm, False, f"{name}: the applied value follows the setpoint again"))
                continue
            if math.isnan(self._since[k]):
                self._since[k] = now
            if not self._raised[k] and now - self._since[k] >= self._settle_s:
                self._raised[k] = True
                changes.append(AlarmChange(alarm, True, f"{name}: written {target[k]:.6g} but the PLC applies "
                                           f"{applied[k]:.6g} (tolerance {self._tol[k]:.6g}) for "
                                           f"{now - self._since[k]:.1f} s"))
        self._pending = bool(off.any())
        return changes
