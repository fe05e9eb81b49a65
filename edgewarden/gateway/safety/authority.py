"""Whether the PLC applies what the gateway writes: its authority read as an input.

The PLC stays the authority: it applies the gateway's setpoints only while it says so
(its remote/accepting flag, and its heartbeat watchdog not tripped). Two checks, both
optional and both from tags the gateway already reads every cycle:

- **Accepting**: ``safety.plc_remote_tag`` (true = the PLC applies the gateway's
  setpoints) and ``safety.plc_watchdog_tag`` (true = its dead-man watchdog has tripped).
  The control cycle does not claim to control while the PLC does not accept: from AUTO
  or FALLBACK it goes to MANUAL (held by ``plc_remote``), and hands back when the PLC
  accepts.
- **Applied**: per action with an ``applied`` tag of its own, the written setpoint and
  the applied value differ by more than ``applied_tolerance`` (default 5 % of the
  action's span) for longer than ``safety.applied_settle_s``: an alarm naming the action,
  raised and cleared once each (audited by the cycle, shown in status and metrics).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgewarden.gateway.config import Settings
from edgewarden.gateway.io.tags import Quality, Snapshot, TagMap

_GOOD = int(Quality.GOOD)


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
        self.accepts: bool | None = None  # None: not configured, or not read good this cycle
        # per action whose applied value is a tag of its own: (name, applied slot, position
        # in the action vector, tolerance); plain Python: a few actions, judged every cycle
        checked = [a for a in settings.policy.actions if (s.actions[a].applied or a) != a]
        self._items = [(a, tags.index[s.actions[a].applied or a], settings.policy.actions.index(a),
                        s.actions[a].applied_tolerance if s.actions[a].applied_tolerance is not None
                        else 0.05 * (s.actions[a].max - s.actions[a].min)) for a in checked]
        self._settle_s = s.applied_settle_s
        self._since = [math.nan] * len(checked)  # when each mismatch began (NaN: none)
        self._raised = [False] * len(checked)  # its alarm is raised

    def unknown(self) -> None:
        """This cycle's data cannot say (bad, stale or no data): no claim either way."""
        self.accepts = None

    def read(self, monitored: np.ndarray) -> bool | None:
        """Whether the PLC accepts the gateway's setpoints, from this cycle's (good) values."""
        if not self.configured:
            return None
        remote = self._remote < 0 or monitored.item(self._remote) != 0.0
        tripped = self._watchdog >= 0 and monitored.item(self._watchdog) != 0.0
        self.accepts = remote and not tripped
        return self.accepts

    @property
    def alarm_names(self) -> list[str]:
        """Every alarm ``compare`` may raise."""
        return [f"setpoint_mismatch:{name}" for name, *_ in self._items]

    def compare(self, written: np.ndarray, snap: Snapshot, now: float, writing: bool) -> list[AlarmChange]:
        """Written setpoints against the applied values; the alarms raised or cleared now.
        ``writing``: the gateway's setpoints are meant to be applied (AUTO/FALLBACK); otherwise
        no mismatch is judged and open ones clear."""
        changes: list[AlarmChange] = []
        values, quality, since = snap.values, snap.quality, self._since
        for k, (name, slot, pos, tol) in enumerate(self._items):
            applied, target = values.item(slot), written.item(pos)
            if not (writing and quality.item(slot) == _GOOD and abs(applied - target) > tol):
                if since[k] == since[k]:  # a mismatch that has ended
                    since[k] = math.nan
                    if self._raised[k]:
                        self._raised[k] = False
                        changes.append(AlarmChange(f"setpoint_mismatch:{name}", False,
                                                   f"{name}: the applied value follows the setpoint again"))
                continue
            if since[k] != since[k]:
                since[k] = now
            if not self._raised[k] and now - since[k] >= self._settle_s:
                self._raised[k] = True
                changes.append(AlarmChange(f"setpoint_mismatch:{name}", True,
                                           f"{name}: written {target:.6g} but the PLC applies {applied:.6g} "
                                           f"(tolerance {tol:.6g}) for {now - since[k]:.1f} s"))
        return changes
