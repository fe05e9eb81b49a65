"""Simplex supervision of the learned policy: when it loses control, and when it gets it back.

The policy loses control (AUTO → FALLBACK) on a policy fault, on inputs outside its
training distribution for ``ood_cycles`` cycles in a row (outside the training range or
far from its mean, or, for a model with an uncertainty output, an uncertainty above the
contract's threshold times ``uncertainty_scale``), or after ``max_interventions``
shield clips within ``intervention_window_s``. In FALLBACK the verified controller
(edgewarden/gateway/policy/fallback.py) proposes the action; control goes back to the policy once,
for ``agreement_s``, its inputs have been inside its training distribution and its
proposal, clipped to this cycle's bounds, within its authority band of the fallback's (or
within ``agreement_tolerance``, where that is wider; edgewarden/gateway/safety/trust.py), or
at once when an operator hands it back or rolls back to the previous model. So a policy
with full authority takes control back as soon as the plant is in its support again, one
with a band once it also proposes near what the fallback does. A model swapped in less than ``rollback_window_s`` ago
that loses control is rolled back instead of handed to the fallback: the controller
before it takes over. Everything proposed still passes the shield.
"""

from __future__ import annotations

import collections
import enum
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edgewarden.gateway.config import Settings
from edgewarden.gateway.modes import Mode, ModeMachine
from edgewarden.gateway.policy.fallback import FallbackController


class Screen(enum.IntEnum):
    """The out-of-distribution guard's word on this cycle's input."""

    IN = 0  # inside the training distribution
    COUNTED = 1  # outside, counted; the policy keeps control below the threshold
    REJECTED = 2  # outside for ood_cycles in a row: the fallback has control


def ood_bounds(policy: Any, margin: float, z: float, n: int) -> tuple[np.ndarray, ...]:
    """(lo, hi, mean, std, z) of the guard from the contract's training statistics: the range
    widened by ``margin`` of its span, and mean ± z·std. A model without statistics is
    never out of distribution."""
    stats = getattr(getattr(policy, "contract", None), "obs_stats", None)
    if stats is None:
        inf = np.full(n, np.inf)
        return -inf, inf, np.zeros(n), inf, np.array(1.0)
    lo, hi = np.array(stats.min, dtype=float), np.array(stats.max, dtype=float)
    pad = margin * (hi - lo)
    std = np.array(stats.std, dtype=float)
    std = np.where(std > 0, std, np.inf)  # a constant training feature: judged by range only
    return lo - pad, hi + pad, np.array(stats.mean, dtype=float), std, np.array(z)


def uncertainty_limit(policy: Any, scale: float) -> float:
    """The uncertainty above which an input is out of distribution: the contract's threshold
    times ``scale``; infinite for a model without an uncertainty output."""
    unc = getattr(getattr(policy, "contract", None), "uncertainty", None)
    return math.inf if unc is None else float(unc.threshold) * scale


class Supervisor:
    """Owns the fallback controller, the OOD guard, the intervention window and the
    hand-back timer; asks the mode machine for FALLBACK and AUTO."""

    def __init__(self, settings: Settings, monitored: list[str], span: np.ndarray, policy: Any,
                 modes: ModeMachine, on_trouble: Callable[[str, float], bool]) -> None:
        fb = settings.safety.fallback
        self._fb = fb
        self._modes = modes
        self._on_trouble = on_trouble  # the model manager: a fresh model's trouble rolls it back
        self._inputs = list(settings.policy.observations)
        self.controller = FallbackController(settings, monitored)
        self._agree_tol = np.array([fb.agreement_tolerance.get(a, 0.05 * s)
                                    for a, s in zip(settings.policy.actions, span)])
        self._interventions: collections.deque[float] = collections.deque()
        self._agree_since = math.nan
        self._ood_run = 0
        self.reason = ""  # why the fallback has control (the last entry)
        self._ood = ood_bounds(policy, fb.ood_margin, fb.ood_z, len(self._inputs))
        self._unc_limit = uncertainty_limit(policy, fb.uncertainty_scale)

    def take_over(self, old: Supervisor) -> None:
        """Carry the run-time state of the supervisor this one replaces (a reload)."""
        self._interventions = old._interventions
        self._agree_since = old._agree_since
        self._ood_run = old._ood_run
        self.reason = old.reason

    def use_policy(self, policy: Any) -> None:
        """A new model took over: its own training distribution, a fresh run count."""
        self._ood = ood_bounds(policy, self._fb.ood_margin, self._fb.ood_z, len(self._inputs))
        self._unc_limit = uncertainty_limit(policy, self._fb.uncertainty_scale)
        self._ood_run = 0

    def screen(self, x: np.ndarray, uncertainty: float = math.nan) -> Screen:
        """Judge this cycle's policy input (float64, in ``policy.observations`` order) and the
        model's uncertainty about it (NaN: the model has no uncertainty output)."""
        lo, hi, mean, std, z = self._ood
        far = (x < lo) | (x > hi) | (np.abs(x - mean) > z * std)
        unsure = uncertainty > self._unc_limit  # False for NaN
        if not unsure and not far.any():
            self._ood_run = 0
            return Screen.IN
        self._ood_run += 1
        if self._ood_run < self._fb.ood_cycles:
            return Screen.COUNTED
        if far.any():
            i = int(np.flatnonzero(far)[0])
            self.enter(f"input {self._inputs[i]!r} = {x[i]:.6g} lies outside the policy's training "
                       f"distribution for {self._ood_run} cycles")
        else:
            self.enter(f"the policy's uncertainty {uncertainty:.3g} exceeds its limit {self._unc_limit:.3g} "
                       f"(out of distribution) for {self._ood_run} cycles")
        return Screen.REJECTED

    def intervened(self, now: float) -> None:
        """The shield clipped a proposal; too many within the window hand over to the fallback."""
        fb, window = self._fb, self._interventions
        window.append(now)
        while window and now - window[0] > fb.intervention_window_s:
            window.popleft()
        if len(window) >= fb.max_interventions and self._modes.mode == Mode.AUTO:
            window.clear()
            self.enter(f"{fb.max_interventions} shield interventions within {fb.intervention_window_s:g} s")

    def enter(self, reason: str) -> None:
        """Hand control from the policy to the fallback (from AUTO; elsewhere only the
        hand-back timer restarts). A model swapped in moments ago is rolled back instead:
        the controller before it takes over in AUTO at the next cycle, and no fallback
        holds the outputs of the model that just failed."""
        self._agree_since = math.nan
        if self._modes.mode == Mode.AUTO:
            if self._on_trouble(reason, time.monotonic()):
                return
            self.controller.reset()
            self.reason = reason
            self._modes.request(Mode.FALLBACK, reason=reason, actor="gateway")

    def hand_back(self, now: float) -> dict[str, Any]:
        """The hand-back rule and how far this FALLBACK is along it (for status)."""
        agreeing = 0.0 if math.isnan(self._agree_since) else now - self._agree_since
        return {"reason": self.reason, "rule": f"back to AUTO once, for {self._fb.agreement_s:g} s, the policy's "
                "inputs have been in its training distribution and its proposal within its authority band (or "
                "agreement_tolerance, if wider) of the fallback's; or an operator's `ctl auto` (the active "
                "policy now) or `model rollback` (the previous one takes over)",
                "agreeing_s": round(agreeing, 3), "needed_s": self._fb.agreement_s}

    def resume(self) -> None:
        """FALLBACK resumes after MANUAL: the controller starts afresh."""
        self.controller.reset()

    def fallback_step(self, monitored: np.ndarray, last: np.ndarray, period: float, proposed: np.ndarray | None,
                      lo: np.ndarray, hi: np.ndarray, now: float, out: np.ndarray,
                      band: np.ndarray | None = None) -> None:
        """In FALLBACK: the fallback's action into ``out``; back to AUTO after agreement_s of
        in-distribution inputs (``proposed`` is None otherwise) and the policy's (clipped)
        proposal within ``band`` (its authority band; None: agreement_tolerance alone) of it."""
        self.controller.compute(monitored, last, period, out)
        if proposed is None or self._ood_run:  # not inside its training distribution this cycle
            self._agree_since = math.nan
            return
        tol = self._agree_tol if band is None else np.maximum(self._agree_tol, band)
        if not bool((np.abs(np.clip(proposed, lo, hi) - out) <= tol).all()):
            self._agree_since = math.nan
        elif math.isnan(self._agree_since):
            self._agree_since = now
        elif now - self._agree_since >= self._fb.agreement_s:
            self._agree_since = math.nan
            self._modes.request(Mode.AUTO, reason="the policy's inputs in its training distribution and its "
                                f"proposal within its band of the fallback's for {self._fb.agreement_s:g} s",
                                actor="gateway")
