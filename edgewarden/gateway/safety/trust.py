"""Bounded authority: a learned policy acts within a band around the incumbent's proposal.

The incumbent is the verified controller that ran before, run beside the learned policy
every AUTO cycle with its own state: the ``[safety.fallback]`` PID loops (on the monitored
tags), else the ``[policy.pid]`` loops of a ``kind = "pid"`` gateway a model was promoted
over (on the policy's observations). It starts bumpless from the action the plant gets
when the learned policy takes control; an action without a loop is anchored there. The
policy's proposal is clipped to incumbent ± band per action before the shield, which then
applies as ever: the band never widens what the shield allows.

A model loaded, promoted or dropped in at run time starts with ``[safety.authority] band``
(or ``band_fraction`` of the action's span); the model named in ``[policy] path`` has full
authority, having been commissioned (``band_configured_model = true``: the band too). The
band earns its way out: after every ``widen_after_s`` of AUTO without a band clip, a shield
intervention, an out-of-distribution input or a soft-limit alarm it widens by
``widen_factor``, up to the action's span (full authority). An operator sets it
(``model authority``); a hand-over to the fallback and an e-stop put it back to where this
model started, a model swap to where the new one starts. The band in force is in each cycle record (``band``), status and metrics;
every change is an ``authority`` audit record.

A controller without a model (``kind = "pid"``, ``"hold"``) is the incumbent itself: no band.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edgewarden.gateway.config import AuthoritySection, Settings
from edgewarden.gateway.policy.fallback import PidBank

__all__ = ["TrustRegion"]


class TrustRegion:
    """The incumbent's proposal and the band around it, for one control loop.

    ``values`` given to :meth:`limit` are the monitored tags' values when the incumbent is
    the fallback's loops, the policy's observations (float64) when it is the policy's own.
    """

    def __init__(self, settings: Settings, monitored: list[str], on_change: Callable[[dict[str, Any]], None],
                 policy: Any = None, *, full: bool = False) -> None:
        """``policy``: the active one at start (``full``: with full authority)."""
        spec: AuthoritySection = settings.safety.authority
        actions = list(settings.policy.actions)
        lo = np.array([settings.safety.actions[a].min for a in actions])
        hi = np.array([settings.safety.actions[a].max for a in actions])
        self.actions = actions
        self.span = hi - lo
        self.start = np.array([min(spec.band.get(a, spec.band_fraction * s), s) for a, s in zip(actions, self.span)])
        self.origin = self.span if full else self.start  # where the active policy started: trouble goes back here
        self.band = self.origin.copy()
        self.full = bool((self.band >= self.span).all())  # no band at all: the incumbent need not run
        self._spec = spec
        fb, pol = settings.safety.fallback, settings.policy
        if fb.controller == "pid" and fb.pid:
            self.source, self.on_observations = "fallback pid", False
            self._bank = PidBank.for_settings(settings, fb.pid, monitored)
        elif pol.pid:
            self.source, self.on_observations = "policy pid", True
            self._bank = PidBank.for_settings(settings, pol.pid, list(pol.observations))
        else:
            self.source, self.on_observations = "anchor", False  # every action held where control began
            self._bank = PidBank.for_settings(settings, {}, monitored)
        self._on_change = on_change
        self.applies = getattr(policy, "contract", None) is not None  # the active policy is a learned one
        self.engaged = False  # the incumbent runs (the learned policy has control)
        self.incumbent = np.full(len(actions), np.nan)
        self._low = np.zeros(len(actions))
        self._high = np.zeros(len(actions))
        self._clean_since = math.nan
        self.clipped = False  # this cycle's proposal was clipped to the band
        self.clips = 0

    # ---- the cycle's side ------------------------------------------------------------
    def limit(self, proposal: np.ndarray, values: np.ndarray, applied: np.ndarray, period: float,
              now: float) -> bool:
        """Clip ``proposal`` (in place) to the band around the incumbent's proposal for this
        cycle; starts the incumbent from ``applied`` when control just began. True if clipped."""
        self.clipped = False
        if not self.applies or self.full:
            return False
        if not self.engaged:
            self._bank.track(values, applied)
            self.incumbent[:] = applied
            self.engaged = True
            self._clean_since = now
        self._bank.compute(values, self.incumbent, period, self.incumbent)
        np.subtract(self.incumbent, self.band, out=self._low)
        np.add(self.incumbent, self.band, out=self._high)
        self.clipped = bool(((proposal < self._low) | (proposal > self._high)).any())
        if self.clipped:
            np.clip(proposal, self._low, self._high, out=proposal)
            self.clips += 1
            self._clean_since = now
        elif self._spec.widen_after_s and now - self._clean_since >= self._spec.widen_after_s:
            self._clean_since = now
            if (self.band < self.span).any():
                self._set(np.minimum(self.band * self._spec.widen_factor, self.span), "gateway",
                          f"{self._spec.widen_after_s:g} s in AUTO without trouble")
        return self.clipped

    def unclean(self, now: float) -> None:
        """A shield intervention, an out-of-distribution input, a soft-limit alarm: the time
        that widens the band starts again."""
        if self.engaged:
            self._clean_since = now

    def take_over(self, old: TrustRegion) -> None:
        """A reload: the band in force carries over (within the new spans); the incumbent
        starts again from what the plant gets at the next AUTO cycle."""
        self.applies, self.origin = old.applies, np.minimum(old.origin, self.span)
        self.band = np.minimum(old.band, self.span) if len(old.band) == len(self.span) else self.start.copy()
        self.full = bool((self.band >= self.span).all())
        self.clips = old.clips

    def release(self, trouble: bool) -> None:
        """The learned policy does not have control this cycle; ``trouble`` (a hand-over to
        the fallback, an e-stop) puts the band back to the start."""
        self.engaged = False
        if trouble and (self.band != self.origin).any():
            self._set(self.origin.copy(), "gateway", "control taken from the learned policy")

    def use_policy(self, policy: Any, *, full: bool = False) -> None:
        """A new active policy: a learned one starts with the starting band, or with the
        action's span (``full``: the commissioned model)."""
        self.applies = getattr(policy, "contract", None) is not None
        self.engaged = False
        self.origin = self.span if full else self.start
        if (self.band != self.origin).any():
            self._set(self.origin.copy(), "gateway", "model swap")

    # ---- an operator's side -----------------------------------------------------------
    def set_band(self, band: dict[str, float] | str, actor: str, reason: str) -> None:
        """``band``: per action (engineering units), ``"full"`` (the span: no band) or
        ``"start"``. Raises ValueError naming what is wrong."""
        if band == "full":
            new = self.span.copy()
        elif band == "start":
            new = self.start.copy()
        elif isinstance(band, dict) and band:
            new = self.band.copy()
            for name, value in band.items():
                if name not in self.actions:
                    raise ValueError(f"band: {name!r} is not one of the actions {self.actions}")
                if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                    raise ValueError(f"band: {name} = {value!r} must be a positive number (engineering units)")
                new[self.actions.index(name)] = min(float(value), self.span[self.actions.index(name)])
        else:
            raise ValueError('band: give ACTION=VALUE pairs, "full" or "start"')
        self._set(new, actor, reason)
        self._clean_since = time.monotonic()  # widening earns on from the operator's band

    def _set(self, band: np.ndarray, actor: str, reason: str) -> None:
        old, self.band, was_full = self.band, band, self.full
        self.full = bool((band >= self.span).all())
        if was_full and not self.full:  # a band again: the incumbent starts from what the plant gets
            self.engaged = False
        self._on_change({"band": self.record(), "previous": dict(zip(self.actions, old.tolist())),
                         "actor": actor, "reason": reason})

    # ---- what status, metrics and the record show -----------------------------------
    def record(self) -> dict[str, float]:
        return dict(zip(self.actions, self.band.tolist()))

    def describe(self, now: float) -> dict[str, Any]:
        clean = 0.0 if not self.engaged or math.isnan(self._clean_since) else now - self._clean_since
        return {"applies": self.applies, "engaged": self.engaged, "incumbent": self.source,
                "band": self.record(), "start": dict(zip(self.actions, self.start.tolist())),
                "full": dict(zip(self.actions, self.span.tolist())),
                "incumbent_proposal": [None if v != v else v for v in self.incumbent.tolist()] if self.engaged else None,
                "clips": self.clips, "clean_s": round(clean, 3),
                "widen_after_s": self._spec.widen_after_s, "widen_factor": self._spec.widen_factor}
