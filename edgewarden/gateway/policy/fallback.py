"""PID loops, and the fallback controller (Simplex) built on them.

:class:`PidBank` runs a PID per configured action over a vector of named values (actions
without a loop hold the last action), with conditional integration so the integral does
not wind up while the output is saturated. It serves twice: as the fallback controller,
simple, verified control when the policy is not trusted (``[safety.fallback]``, on the
monitored tags), and as a primary controller without a model (``[policy] kind = "pid"``,
on the policy's observations; edgewarden/gateway/policy/controllers.py). Both outputs go
through the same shield.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgewarden.gateway.config import PidSpec, Settings


class PidBank:
    def __init__(self, actions: Sequence[str], lo: np.ndarray, hi: np.ndarray, pids: dict[str, PidSpec],
                 names: list[str]) -> None:
        """``actions`` with their bounds ``lo``..``hi``; ``names``: the tags of the value
        vector ``compute`` is given, in its order."""
        actions = list(actions)
        self.lo = np.asarray(lo, dtype=float).copy()
        self.hi = np.asarray(hi, dtype=float).copy()
        self._pids: list[tuple[int, int, int | None, float, float, float, float, float]] = []
        for name, pid in pids.items():
            sp_slot = names.index(pid.setpoint) if isinstance(pid.setpoint, str) else None
            sp_const = float(pid.setpoint) if not isinstance(pid.setpoint, str) else 0.0
            self._pids.append((actions.index(name), names.index(pid.pv), sp_slot, sp_const,
                               pid.kp, pid.ki, pid.kd, pid.bias))
        self._integral = np.zeros(len(actions))
        self._prev_err = np.full(len(actions), np.nan)
        self._prev_out = np.full(len(actions), np.nan)  # what compute put out last; NaN: nothing yet
        self._tol = 1e-9 * np.maximum(1.0, self.hi - self.lo)

    @classmethod
    def for_settings(cls, settings: Settings, pids: dict[str, PidSpec], names: list[str]) -> PidBank:
        """The loops ``pids`` on the configured actions and their bounds."""
        actions = list(settings.policy.actions)
        specs = [settings.safety.actions[a] for a in actions]
        return cls(actions, np.array([a.min for a in specs]), np.array([a.max for a in specs]), pids, names)

    def reset(self) -> None:
        """Forget the integral and the derivative history."""
        self._prev_err[:] = np.nan
        self._prev_out[:] = np.nan
        self._integral[:] = 0.0

    def track(self, values: np.ndarray, last: np.ndarray) -> None:
        """Bumpless start: forget the derivative history and set each integral so that the
        next output, for the present error, is ``last`` (what the plant gets now)."""
        self._prev_err[:] = np.nan
        self._prev_out[:] = np.nan
        self._integral[:] = 0.0
        for j, pv_slot, sp_slot, sp_const, kp, ki, _kd, bias in self._pids:
            if ki != 0.0:
                sp = values[sp_slot] if sp_slot is not None else sp_const
                self._integral[j] = float(last[j]) - (bias + kp * float(sp - values[pv_slot]))

    def compute(self, values: np.ndarray, last: np.ndarray, dt: float, out: np.ndarray) -> None:
        out[:] = last  # hold, unless a PID says otherwise
        for j, pv_slot, sp_slot, sp_const, kp, ki, kd, bias in self._pids:
            sp = values[sp_slot] if sp_slot is not None else sp_const
            err = float(sp - values[pv_slot])
            deriv = 0.0 if np.isnan(self._prev_err[j]) else (err - self._prev_err[j]) / dt
            self._prev_err[j] = err
            p_part = bias + kp * err + kd * deriv
            if ki != 0.0:
                # conditional integration (anti-windup): integrate only while the output is not
                # saturated, or when integrating moves it back inside the bounds; and not further
                # in a direction the shield cut the last output (a rate limit ramping, an
                # interlock's bound): the plant did not get it, so more of it is windup
                step = ki * err * dt
                u = p_part + self._integral[j] + step
                cut = last[j] - self._prev_out[j]  # NaN (no comparison holds) before the first output
                if ((self.lo[j] <= u <= self.hi[j] or (u > self.hi[j] and step < 0) or (u < self.lo[j] and step > 0))
                        and not (cut > self._tol[j] and step < 0) and not (cut < -self._tol[j] and step > 0)):
                    self._integral[j] += step
            out[j] = min(max(p_part + self._integral[j], self.lo[j]), self.hi[j])
            self._prev_out[j] = out[j]


class FallbackController:
    """``hold`` keeps the last action that passed the shield; ``pid`` runs the configured
    loops on the monitored tags (actions without a loop hold)."""

    def __init__(self, settings: Settings, monitored: list[str]) -> None:
        fb = settings.safety.fallback
        self.kind = fb.controller
        self._bank = PidBank.for_settings(settings, fb.pid if fb.controller == "pid" else {}, monitored)

    def reset(self) -> None:
        """Forget the integral and the derivative history (on every entry to FALLBACK)."""
        self._bank.reset()

    def compute(self, monitored_values: np.ndarray, last: np.ndarray, dt: float, out: np.ndarray) -> None:
        self._bank.compute(monitored_values, last, dt, out)
