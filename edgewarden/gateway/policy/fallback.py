"""The fallback controller (Simplex): simple, verified control when the policy is not trusted.

``hold`` keeps the last action that passed the shield. ``pid`` runs a PID per configured
action on monitored tags (actions without a PID hold), with conditional integration so
the integral does not wind up while the output is saturated. The fallback's output goes through
the same shield as the policy's.
"""

from __future__ import annotations

import numpy as np

from edgewarden.gateway.config import Settings


class FallbackController:
    def __init__(self, settings: Settings, monitored: list[str]) -> None:
        fb = settings.safety.fallback
        actions = list(settings.policy.actions)
        self.kind = fb.controller
        specs = [settings.safety.actions[a] for a in actions]
        self.lo = np.array([a.min for a in specs])
        self.hi = np.array([a.max for a in specs])
        self._pids: list[tuple[int, int, int | None, float, float, float, float, float]] = []
        if fb.controller == "pid":
            for name, pid in fb.pid.items():
                sp_slot = monitored.index(pid.setpoint) if isinstance(pid.setpoint, str) else None
                sp_const = float(pid.setpoint) if not isinstance(pid.setpoint, str) else 0.0
                self._pids.append((actions.index(name), monitored.index(pid.pv), sp_slot, sp_const,
                                   pid.kp, pid.ki, pid.kd, pid.bias))
        self._integral = np.zeros(len(actions))
        self._prev_err = np.full(len(actions), np.nan)

    def reset(self) -> None:
        """Forget the integral and the derivative history (on every entry to FALLBACK)."""
        self._prev_err[:] = np.nan
        self._integral[:] = 0.0

    def compute(self, monitored_values: np.ndarray, last: np.ndarray, dt: float, out: np.ndarray) -> None:
        out[:] = last  # hold, unless a PID says otherwise
        for j, pv_slot, sp_slot, sp_const, kp, ki, kd, bias in self._pids:
            sp = monitored_values[sp_slot] if sp_slot is not None else sp_const
            err = sp - monitored_values[pv_slot]
            deriv = 0.0 if np.isnan(self._prev_err[j]) else (err - self._prev_err[j]) / dt
            self._prev_err[j] = err
            p_part = bias + kp * err + kd * deriv
            if ki != 0.0:
                # conditional integration (anti-windup): integrate only while the output is not
                # saturated, or when integrating moves it back inside the bounds
                step = ki * err * dt
                u = p_part + self._integral[j] + step
                if self.lo[j] <= u <= self.hi[j] or (u > self.hi[j] and step < 0) or (u < self.lo[j] and step > 0):
                    self._integral[j] += step
            out[j] = min(max(p_part + self._integral[j], self.lo[j]), self.hi[j])
