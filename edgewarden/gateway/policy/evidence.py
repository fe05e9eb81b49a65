"""Evidence a learned policy must show before it is promoted, computed here from what the
gateway saw while the policy ran in shadow (edgewarden/gateway/policy/registry.py) and, offline,
from a dataset (``edgewarden train report``).

Agreement with the incumbent at steady state says nothing: a policy that repeats its last
action agrees perfectly there and does nothing useful in a transient. So:

- **Echoes**: an observation that is one of the policy's own actions (the action tag, or
  its ``applied`` readback) lets it learn to copy its last output. :func:`sensitivity`
  measures how far each observation moves each action (central differences of the policy
  on real inputs, one standard deviation of each observation, in shares of the action's
  span); an action explained for :data:`COPY_SHARE` or more by echoes is named as copying
  its own output.
- **Transients**: :class:`TransientWatch` marks the cycles in which the incumbent's action
  moved by more than :data:`TRANSIENT_SHARE` of its span within a second (setpoint
  changes, disturbances) and counts the separate transients the shadow saw, and how its
  proposals compared there with the incumbent's.

Neither needs torch: numpy and the policy's own onnxruntime session.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

COPY_SHARE = 0.5  # an action explained this much by echoes of the actions: a copy of its last output
TRANSIENT_SHARE = 0.05  # the incumbent's action moved this share of its span within a second: a transient
CALM_S = 1.0  # a transient ends after this long without one


def echo_observations(observations: Sequence[str], actions: Sequence[str],
                      applied: dict[str, str | None]) -> dict[int, int]:
    """{observation index: action index} for the observations that are an action itself or
    its ``applied`` readback (``applied``: action → readback tag, or None)."""
    out: dict[int, int] = {}
    for j, a in enumerate(actions):
        for i, o in enumerate(observations):
            if o == a or (applied.get(a) is not None and o == applied[a]):
                out[i] = j
    return out


def sensitivity(infer_batch: Callable[[np.ndarray], np.ndarray], inputs: np.ndarray, scale: np.ndarray,
                span: np.ndarray) -> np.ndarray:
    """[n_act, n_obs]: the mean absolute change of each action (share of its span) when
    each observation moves by one ``scale`` (its standard deviation), by central
    differences at every row of ``inputs`` [n, n_obs]. An observation with no spread
    (scale 0) moves nothing."""
    n, n_obs = inputs.shape
    step = np.where(scale > 0, scale, 0.0) / 2.0
    batch = np.repeat(inputs[None, :, :], 2 * n_obs, axis=0)  # [2·n_obs, n, n_obs]
    for i in range(n_obs):
        batch[2 * i, :, i] += step[i]
        batch[2 * i + 1, :, i] -= step[i]
    out = infer_batch(batch.reshape(-1, n_obs).astype(np.float32)).astype(np.float64)
    out = out.reshape(2 * n_obs, n, -1)
    diff = np.abs(out[0::2] - out[1::2]).mean(axis=1)  # [n_obs, n_act]
    return (diff / np.where(span > 0, span, np.inf)).T


@dataclass
class Copying:
    action: str
    share: float  # of the action's sensitivity that comes from echoes
    echoes: list[str]

    def message(self) -> str:
        return (f"{self.action} copies its own output: {self.share:.0%} of how it moves comes from "
                f"{', '.join(self.echoes)} (a readback of the actions); such a policy agrees with the incumbent "
                "at steady state and does nothing in a transient; train it on measurements only")


def copying(sens: np.ndarray, echoes: dict[int, int], observations: Sequence[str],
            actions: Sequence[str]) -> list[Copying]:
    """The actions a policy explains mostly by echoes of the actions (its own output)."""
    out = []
    if not echoes:
        return out
    total = sens.sum(axis=1)
    idx = sorted(echoes)
    for j, a in enumerate(actions):
        if total[j] <= 0:
            continue
        share = float(sens[j, idx].sum() / total[j])
        if share >= COPY_SHARE:
            out.append(Copying(a, share, [observations[i] for i in idx if sens[j, i] > 0]))
    return out


@dataclass
class TransientReport:
    cycles: int = 0  # shadow cycles compared
    transients: int = 0  # separate transients seen
    transient_cycles: int = 0
    agree_steady: float = math.nan  # share of steady cycles in which the shadow agreed
    agree_transient: float = math.nan  # the same during transients
    divergence_transient: float = math.nan  # mean max |shadow − incumbent| / span during transients
    _agree: list[int] = field(default_factory=lambda: [0, 0])  # agreeing cycles: steady, transient
    _div: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("_agree", "_div"):
            d.pop(k)
        return {k: (None if isinstance(v, float) and v != v else v) for k, v in d.items()}


class TransientWatch:
    """Marks transients in the incumbent's actions and compares the shadow there."""

    def __init__(self, span: np.ndarray, period: float) -> None:
        self._span = np.where(span > 0, span, np.inf)
        self._lag = max(1, round(1.0 / period))  # cycles in a second
        self._history = np.full((self._lag, len(span)), np.nan)
        self._k = 0
        self._period = period
        self._calm = 0
        self.report = TransientReport()

    def reset(self) -> None:
        self.forget()
        self._calm = 0
        self.report = TransientReport()

    def forget(self) -> None:
        """The incumbent's recent actions are no longer known (cycles went unwatched): a move
        across the gap is not one this watch saw."""
        self._history[:] = np.nan
        self._k = 0

    def step(self, active: np.ndarray, agrees: bool, divergence: np.ndarray) -> bool:
        """One shadow cycle: the incumbent's action, whether the shadow agreed, and
        |shadow − incumbent| per action. True when this cycle is in a transient."""
        slot = self._k % self._lag
        then = self._history[slot]
        moving = bool(np.nanmax(np.abs(active - then) / self._span, initial=0.0) > TRANSIENT_SHARE)
        self._history[slot] = active
        self._k += 1
        r = self.report
        r.cycles += 1
        if moving:
            if self._calm * self._period >= CALM_S or r.transient_cycles == 0:
                r.transients += 1
            self._calm = 0
            r.transient_cycles += 1
            r._agree[1] += agrees
            r._div += float(np.max(divergence / self._span))
            r.agree_transient = r._agree[1] / r.transient_cycles
            r.divergence_transient = r._div / r.transient_cycles
        else:
            self._calm += 1
            r._agree[0] += agrees
            r.agree_steady = r._agree[0] / (r.cycles - r.transient_cycles)
        return moving
