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
AFTER_S = 60.0  # what the plant did is followed this long from a transient's start (or to the next one)
KEPT = 20  # transients kept in the report (the latest)


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
class Transient:
    """One transient the shadow saw: how far the incumbent moved, how the shadow compared,
    and what the plant then did (each observation's range from the start, for ``AFTER_S``
    or until the next transient)."""

    start: int  # the shadow cycle it began in
    low: np.ndarray  # per observation
    high: np.ndarray
    cycles: int = 0  # cycles in which the incumbent's action was moving
    move: float = 0.0  # the incumbent's largest move within a second, share of its span
    agreeing: int = 0
    div: float = 0.0

    def to_dict(self, names: list[str]) -> dict[str, Any]:
        n = max(self.cycles, 1)
        return {"start_cycle": self.start, "cycles": self.cycles, "move": round(self.move, 4),
                "agree": round(self.agreeing / n, 4), "divergence": round(self.div / n, 4),
                "plant": {name: [round(float(lo), 6), round(float(hi), 6)]
                          for name, lo, hi in zip(names, self.low, self.high)}}


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
    _kept: list[Transient] = field(default_factory=list)  # the latest KEPT
    _names: list[str] = field(default_factory=list)  # the observations, for the plant's answer

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        d = {k: (None if isinstance(v, float) and v != v else v) for k, v in d.items()}
        d["each"] = [t.to_dict(self._names) for t in self._kept]
        return d


class TransientWatch:
    """Marks transients in the incumbent's actions and compares the shadow there."""

    def __init__(self, span: np.ndarray, period: float, names: list[str] | None = None) -> None:
        self._names = list(names or [])
        self._span = np.where(span > 0, span, np.inf)
        self._lag = max(1, round(1.0 / period))  # cycles in a second
        self._history = np.full((self._lag, len(span)), np.nan)
        self._k = 0
        self._period = period
        self._calm = 0
        self.report = TransientReport(_names=self._names)

    def reset(self) -> None:
        self.forget()
        self._calm = 0
        self.report = TransientReport(_names=self._names)

    def forget(self) -> None:
        """The incumbent's recent actions are no longer known (cycles went unwatched): a move
        across the gap is not one this watch saw."""
        self._history[:] = np.nan
        self._k = 0

    def step(self, active: np.ndarray, agrees: bool, divergence: np.ndarray,
             observations: np.ndarray | None = None) -> bool:
        """One shadow cycle: the incumbent's action, whether the shadow agreed,
        |shadow − incumbent| per action, and what the plant reads. True when this cycle is
        in a transient."""
        slot = self._k % self._lag
        then = self._history[slot]
        move = float(np.nanmax(np.abs(active - then) / self._span, initial=0.0))
        moving = move > TRANSIENT_SHARE
        self._history[slot] = active
        self._k += 1
        r = self.report
        r.cycles += 1
        kept = r._kept
        if moving:
            div = float(np.max(divergence / self._span))
            if self._calm * self._period >= CALM_S or r.transient_cycles == 0:
                r.transients += 1
                obs = np.full(len(self._names), np.nan) if observations is None else observations.astype(float)
                kept.append(Transient(r.cycles, obs.copy(), obs.copy()))
                del kept[:-KEPT]
            self._calm = 0
            t = kept[-1]
            t.cycles += 1
            t.move = max(t.move, move)
            t.agreeing += agrees
            t.div += div
            r.transient_cycles += 1
            r._agree[1] += agrees
            r._div += div
            r.agree_transient = r._agree[1] / r.transient_cycles
            r.divergence_transient = r._div / r.transient_cycles
        else:
            self._calm += 1
            r._agree[0] += agrees
            r.agree_steady = r._agree[0] / (r.cycles - r.transient_cycles)
        if kept and observations is not None and (r.cycles - kept[-1].start) * self._period <= AFTER_S:
            np.fmin(kept[-1].low, observations, out=kept[-1].low)  # what the plant then did
            np.fmax(kept[-1].high, observations, out=kept[-1].high)
        return moving
