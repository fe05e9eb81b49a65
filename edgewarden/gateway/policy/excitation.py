"""Excitation: an operator-approved test signal added to the running controller's output,
so that the plant's history holds what learning and tuning need: varied actions (a PID at
steady state writes the same value for hours, and nothing learned from that can do better
than that PID).

``excite start`` (operator, audited) names an amplitude per action (at most
``[policy.excitation] max_fraction`` of its span), a hold time and a duration, and a kind:

- ``prbs``: a pseudo-random binary sequence: every ``hold_s`` each action's offset is +A or
  −A with equal chance (seeded: the sequence is on record and can be replayed);
- ``steps``: +A, 0, −A, 0, ... for ``hold_s`` each, *open loop*: the controller's output is
  held at its value when the test starts and the steps are made around it (the textbook
  step test: in closed loop the controller's answer would be fitted instead of the
  process); the actions not stepped stay the controller's. The data ``edgewarden tune`` fits a first-order-plus-dead-time model to.
  While it runs the controller's own proposal is not written (a PID's integral keeps
  integrating only towards what is written: the anti-windup rule of the PID loops), and
  it takes over again when the test ends.

The offset is added to the proposal of the controller in AUTO, after the authority band and
before the shield, shaped so that the shield has nothing to cut on its account (a cut
counts against the controller, and enough of them hand it over): it moves to each new
level, and back to the controller's own proposal when the duration is over, at half the
action's ``max_rate``, and never pushes the action beyond this cycle's bounds (interlocks
included). The shield still checks the sum like any other action. An action the
controller holds at what was last written (``hold``, or no ``[policy.pid]`` loop) is
refused: the offsets would come back to it and add up. It
stops at the end of its duration, on ``excite stop``, and by itself on anything that is
not plain AUTO with an OK verdict (a soft-limit alarm, a held cycle, a hand-over, MANUAL,
a trip): every start and stop is an ``excitation`` audit record with who and why, and every
cycle it acts in carries its offsets (``excite``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edgewarden.gateway.config import ExcitationSection

__all__ = ["KINDS", "Excitation"]

KINDS = ("prbs", "steps")
_STEPS = (1.0, 0.0, -1.0, 0.0)


class Excitation:
    def __init__(self, actions: Sequence[str], span: np.ndarray, rate: np.ndarray, limits: ExcitationSection,
                 record: Callable[[str, dict[str, Any]], Any]) -> None:
        self._actions = list(actions)
        self._span = np.asarray(span, dtype=float)
        self._ramp = 0.5 * np.asarray(rate, dtype=float)  # per second; inf: no rate limit
        self._limits = limits
        self._record = record
        n = len(self._actions)
        # buffers kept from cycle to cycle
        self._amp, self._level, self._target, self._offset, self._out = (np.zeros(n) for _ in range(5))
        self._zeros, self._step, self._room_up, self._room_down = (np.zeros(n) for _ in range(4))
        self._base: np.ndarray | None = None  # steps: the controller's output when the test started
        self._closed = np.ones(n, dtype=bool)  # the actions not excited
        self._t_last = math.nan
        self._rng = np.random.default_rng(0)
        self._kind, self._hold, self._until, self._next, self._k = "prbs", 1.0, -math.inf, 0.0, 0
        self.active = False
        self._added = False  # the last step's offsets went into a write
        self.started: dict[str, Any] | None = None

    def start(self, kind: str, amplitude: dict[str, float], hold_s: float, duration_s: float, seed: int,
              actor: str, reason: str, now: float) -> None:
        """Check the request against the limits and start; ValueError naming what is wrong."""
        lim = self._limits
        if kind not in KINDS:
            raise ValueError(f"kind {kind!r}: one of {', '.join(KINDS)}")
        if not amplitude:
            raise ValueError("an amplitude per action to excite: ACTION=VALUE")
        amp = np.zeros(len(self._actions))
        for name, value in amplitude.items():
            if name not in self._actions:
                raise ValueError(f"{name} is not an action (actions: {', '.join(self._actions)})")
            j = self._actions.index(name)
            most = lim.max_fraction * self._span[j]
            if not (math.isfinite(value) and 0 < value <= most):
                raise ValueError(f"amplitude {name}={value:g}: must be above 0 and at most {most:g} "
                                 f"([policy.excitation] max_fraction {lim.max_fraction:g} of its span)")
            amp[j] = value
        if not (math.isfinite(hold_s) and lim.min_hold_s <= hold_s <= duration_s):
            raise ValueError(f"hold {hold_s:g} s: at least {lim.min_hold_s:g} s ([policy.excitation] min_hold_s) "
                             "and at most the duration")
        if not (math.isfinite(duration_s) and 0 < duration_s <= lim.max_duration_s):
            raise ValueError(f"duration {duration_s:g} s: above 0 and at most {lim.max_duration_s:g} s "
                             "([policy.excitation] max_duration_s)")
        if self.active:
            raise ValueError("an excitation is running: excite stop first")
        self._amp[:] = amp
        self._level[:] = 0.0
        self._offset[:] = 0.0
        self._out[:] = 0.0
        self._added = False
        self._base = None
        self._closed[:] = amp == 0
        self._t_last = now
        self._rng = np.random.default_rng(seed)
        self._kind, self._hold, self._until, self._next, self._k = kind, hold_s, now + duration_s, now, 0
        self.active = True
        self.started = {"signal": kind, "amplitude": {a: float(amp[j]) for j, a in enumerate(self._actions) if amp[j]},
                        "hold_s": hold_s, "duration_s": duration_s, "seed": seed}
        self._record("excitation", {"change": "start", **self.started, "actor": actor, "reason": reason})

    def step(self, now: float, proposal: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray | None:
        """What to add to ``proposal`` this cycle, within this cycle's bounds ``lo``..``hi``
        (a buffer reused every cycle), or None when not exciting. The cycle stops it
        (:meth:`stop`) on anything that is not plain AUTO."""
        if not self.active:
            return None
        dt, self._t_last = now - self._t_last, now
        if now >= self._until:  # done: back to the controller's own proposal at the same pace, then stop
            if dt > 0:
                np.multiply(self._ramp, dt, out=self._step)
                np.clip(self._zeros, self._out - self._step, self._out + self._step, out=self._out)
            if not self._out.any():
                self.stop("completed", "gateway")
                return None
            self._added = True
            return self._out
        while now >= self._next:  # a new level (a late cycle catches up, the sequence stays the seed's)
            if self._kind == "prbs":
                self._level[:] = self._rng.choice((-1.0, 1.0), size=len(self._level))
            else:
                self._level[:] = _STEPS[self._k % len(_STEPS)]
            self._k += 1
            self._next += self._hold
        np.multiply(self._level, self._amp, out=self._target)
        if dt > 0:  # (the start's own cycle moves nothing: inf · 0 is no step)
            np.multiply(self._ramp, dt, out=self._step)
            np.clip(self._target, self._offset - self._step, self._offset + self._step, out=self._offset)
        if self._kind == "steps":  # open loop: around the output held from the test's start
            if self._base is None:
                self._base = proposal.copy()
            np.subtract(self._base, proposal, out=self._out)
            self._out[self._closed] = 0.0  # the actions not stepped stay the controller's
            self._out += self._offset
        else:
            self._out[:] = self._offset
        # never beyond this cycle's bounds on its own account (a proposal already outside stays the shield's)
        np.subtract(lo, proposal, out=self._room_down)
        np.minimum(self._room_down, 0.0, out=self._room_down)
        np.subtract(hi, proposal, out=self._room_up)
        np.maximum(self._room_up, 0.0, out=self._room_up)
        np.clip(self._out, self._room_down, self._room_up, out=self._out)
        self._added = True
        return self._out

    @property
    def added(self) -> np.ndarray | None:
        """What the last step of a ``prbs`` added to the controller's proposal (None:
        nothing): the controller, which stays in control, is shown its last output without
        it (a PID's anti-windup would take the test signal for a cut of its output). A
        ``steps`` test is open loop: the controller sees what was written, so its integral
        does not run on while its output is not used."""
        return self._out if self._added and self._kind == "prbs" else None

    def use_limits(self, span: np.ndarray, rate: np.ndarray, limits: ExcitationSection) -> None:
        """A reload changed the actions' bounds or rates, or these limits: the next start
        and this run's pace follow them (this cycle's bounds always come from the cycle)."""
        self._span = np.asarray(span, dtype=float)
        self._ramp = 0.5 * np.asarray(rate, dtype=float)
        self._limits = limits

    def stop(self, reason: str, actor: str) -> bool:
        """End it (False when none ran); on record with why."""
        if not self.active:
            return False
        self.active = self._added = False
        self._record("excitation", {"change": "stop", "reason": reason, "actor": actor, "levels": self._k})
        return True

    def describe(self, now: float) -> dict[str, Any] | None:
        if not self.active or self.started is None:
            return None
        return {**self.started, "left_s": round(max(0.0, self._until - now), 1),
                "offset": {a: float(self._offset[j]) for j, a in enumerate(self._actions) if self._amp[j]},
                "open_loop": self._kind == "steps"}
