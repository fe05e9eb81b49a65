"""Policies without a model (``[policy] kind``): ``pid`` runs PID loops on the policy's
observations, ``hold`` keeps the action the plant gets, ``monitor`` proposes nothing (the
loop never starts it, and writes nothing at all; edgewarden/gateway/outputs.py).

They stand where an ONNX policy stands: the same checks, mode gate, shield, heartbeat and
audit record; the cycle calls ``infer`` only in AUTO. ``sha256`` names the controller and
its tuning (the hash of its settings), so each cycle record says what proposed its action,
and a learned model can be shadowed against it and promoted over it.
"""

from __future__ import annotations

import hashlib
import json
import math
import time

import numpy as np

from edgewarden.gateway.config import Settings
from edgewarden.gateway.policy.fallback import PidBank


class ControllerPolicy:
    contract = None  # no model contract: no training statistics, no out-of-distribution guard
    path = None
    uncertainty = math.nan  # no uncertainty output

    def __init__(self, settings: Settings) -> None:
        p = settings.policy
        self.kind = p.kind
        # the actions it proposes as they were last written (no loop of their own): an offset
        # added to them (edgewarden/gateway/policy/excitation.py) would come back and add up
        self.holds = frozenset(a for a in p.actions if a not in p.pid)
        self._bank = PidBank.for_settings(settings, p.pid, list(p.observations))
        self._out = np.zeros(len(p.actions))
        self._last = self._out  # until attached: the loop's last written action
        self._values: np.ndarray | None = None  # until attached: the float32 input itself
        self._period = 1.0 / settings.gateway.cycle_hz
        self._called = -np.inf
        tuning = {"kind": p.kind, "observations": p.observations, "actions": p.actions,
                  "pid": {k: v.model_dump() for k, v in p.pid.items()}}
        self.sha256 = hashlib.sha256(json.dumps(tuning, sort_keys=True).encode()).hexdigest()

    @property
    def algorithm(self) -> str:
        return self.kind

    def attach(self, last_action: np.ndarray, observations: np.ndarray, period: float) -> None:
        """The loop's last written action and its float64 observations (read, never written
        here: the loops compute in float64 like the fallback's, not in the model's float32
        input), and its cycle period."""
        self._last = last_action
        self._values = observations
        self._period = period

    def infer(self, obs: np.ndarray) -> np.ndarray:
        if self._values is not None:
            obs = self._values  # the same values this cycle, in float64
        now = time.monotonic()
        if now - self._called > 1.5 * self._period:
            # not in control last cycle (start, hand-back, a held cycle): start from what the
            # plant gets, without a bump
            self._bank.track(obs, self._last)
        self._called = now
        self._bank.compute(obs, self._last, self._period, self._out)
        return self._out

    def __repr__(self) -> str:
        return f"ControllerPolicy({self.kind}, {self.sha256[:16]})"
