"""What a dataset can teach, before any training (``edgewarden train inspect``; ``fit``
runs it first): per action its spread, the share of rows at each bound and how much of
its range the data covers; per observation its range against the plant's hard limits (where
the plant has a twin with the dataset's tags) and the share of rows outside them; the
episodes and their returns.

An observation that echoes an action (the action's tag itself, or a readback whose next
value follows the action: within 1 % of its span in most rows, correlated above 0.95) lets
a policy learn to copy its last output, which agrees with the incumbent at steady state
and does nothing in a transient: every algorithm is warned, and the gateway refuses to
promote a policy that does copy (edgewarden/gateway/policy/evidence.py).

How informative the actions are: ``independent`` is the spread of the part of each action
the observations do not explain linearly (the residual of a least-squares fit of the
action on the measured observations, echoes of the actions left out), as a share of its
span; a nonlinear controller's own variation shows in it too. A controller at steady state writes a function of
what it sees: the data then shows what that controller did, never what another action
would have done, and no estimate can show a learned policy better than it. Below
``INDEPENDENT_SHARE`` the action is flagged; an excitation (``edgewarden excite``) on the
running controller puts independent variation into the history.

An action that never varies, or sits on a bound much of the time, gives a critic nothing
to learn that action's value from: TD3+BC and CQL then extrapolate Q outside the data and
can diverge (as on the CSTR expert data, where feed_flow never moves and coolant_flow
rests on a bound 30 % of the time). BC and IQL learn only from the recorded actions and
are warned; TD3+BC and CQL are refused unless the user says so."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgewarden.training.datasets import Dataset

CONSTANT_SHARE_OF_SPAN = 1e-3  # std below this share of the action's range: it never varies
AT_BOUND_SHARE = 0.25  # on a bound this often: the data hardly shows the action off it
COVERAGE_BINS = 20
ECHO_SHARE_OF_SPAN = 0.01  # a readback's next value within this share of the action's span (median) ...
ECHO_CORRELATION = 0.95  # ... and this correlated with the action: the observation echoes it
CRITIC_ALGOS = ("td3bc", "cql")  # extrapolate Q through the actor's gradient
INDEPENDENT_SHARE = 0.01  # of the span: below it, the action is (nearly) a function of the observations


@dataclass
class ActionStats:
    tag: str
    units: str
    low: float
    high: float
    mean: float
    std: float
    at_low: float  # share of rows
    at_high: float
    coverage: float  # share of COVERAGE_BINS equal bins of [low, high] that hold any row
    independent: float = float("nan")  # std of what the observations do not explain, share of the span

    def uninformative(self) -> str | None:
        if not self.independent < INDEPENDENT_SHARE or self.problem() is not None:  # (never varies: said already)
            return None
        return (f"{self.tag} varies independently of the observations by {self.independent:.2%} of its span: the "
                "data shows what the recorded controller did, not what other actions do (no estimate can show a "
                "learned policy better than it); record excited history: edgewarden excite start --signal prbs")

    def problem(self) -> str | None:
        span = self.high - self.low
        if span <= 0 or self.std <= CONSTANT_SHARE_OF_SPAN * span:
            units = "" if self.units in ("", "1") else f" {self.units}"  # "1": dimensionless
            return f"{self.tag} never varies (std {self.std:.3g}{units})"
        for share, where in ((self.at_low, "lower"), (self.at_high, "upper")):
            if share >= AT_BOUND_SHARE:
                return f"{self.tag} sits on its {where} bound in {share:.1%} of the rows"
        return None


@dataclass
class ObservationStats:
    tag: str
    units: str
    min: float
    max: float
    mean: float
    std: float
    hard_low: float | None = None  # the twin's hard limits, where it has this tag
    hard_high: float | None = None
    outside: float | None = None  # share of rows outside [hard_low, hard_high]
    echoes: str | None = None  # the action this observation echoes (its tag, or a readback of it)

    def problem(self) -> str | None:
        if self.echoes is None:
            return None
        return (f"observation {self.tag} echoes action {self.echoes} (the gateway's own output read back): a "
                "policy can learn to copy its last action, which agrees with the incumbent at steady state and "
                "does nothing in a transient; train on measurements only (leave it out of the observations)")


@dataclass
class DatasetReport:
    plant: str
    rows: int
    actions: list[ActionStats]
    observations: list[ObservationStats]
    episodes: int
    mean_return: float | None
    note: str
    violation_rate: float | None = None  # share of rows with any observation outside a hard limit

    def action_problems(self) -> list[str]:
        """What a critic cannot learn from (TD3+BC and CQL are refused on these)."""
        return [p for a in self.actions if (p := a.problem()) is not None]

    def problems(self) -> list[str]:
        """Everything worth a warning: the actions' problems, uninformative actions, then
        echoing observations."""
        return (self.action_problems() + [p for a in self.actions if (p := a.uninformative()) is not None]
                + [p for o in self.observations if (p := o.problem()) is not None])

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "problems": self.problems()}

    def lines(self) -> list[str]:
        out = [f"dataset: {self.rows} rows, plant {self.plant}"
               + (f", {self.episodes} episodes, mean return {self.mean_return:.4g}" if self.episodes else "")
               + (f", violation rate {self.violation_rate:.2%}" if self.violation_rate is not None else "")
               + (f" ({self.note})" if self.note else "")]
        for a in self.actions:
            out.append(f"  action  {a.tag}: [{a.low:g}, {a.high:g}] {a.units}, mean {a.mean:.4g}, std {a.std:.3g}, "
                       f"at low {a.at_low:.1%}, at high {a.at_high:.1%}, covers {a.coverage:.0%} of its range, "
                       + ("independent of the observations: too few rows to say" if a.independent != a.independent
                          else f"independent of the observations {a.independent:.2%} of its span"))
        for o in self.observations:
            lim = ("" if o.outside is None else
                   f", hard limits [{o.hard_low:g}, {o.hard_high:g}], outside {o.outside:.2%}")
            out.append(f"  obs     {o.tag}: {o.min:.4g} to {o.max:.4g} {o.units}, mean {o.mean:.4g}, std {o.std:.3g}"
                       + lim)
        out += [f"  warning: {p}" for p in self.problems()]
        return out


def inspect_dataset(ds: Dataset) -> DatasetReport:
    from edgewarden.training.datasets import DatasetError

    meta = ds.meta
    if len(ds) == 0:
        raise DatasetError("the dataset has no rows: nothing to learn from")
    acts = ds.actions.astype(np.float64)
    obs = ds.observations.astype(np.float64)
    echoes = [echoed_action(ds, i, tag) for i, tag in enumerate(meta.observation_tags)]
    measured = np.array([e is None for e in echoes], dtype=bool)  # a readback would "explain" the action
    independent = _independent(obs[:, measured], acts, np.asarray(meta.action_high, np.float64)
                               - np.asarray(meta.action_low, np.float64))
    actions = []
    for j, (tag, units) in enumerate(zip(meta.action_tags, meta.action_units, strict=True)):
        lo, hi = float(meta.action_low[j]), float(meta.action_high[j])
        col = acts[:, j]
        tol = 1e-6 * max(hi - lo, 1e-12)
        if hi > lo:
            bins = np.clip(((col - lo) / (hi - lo) * COVERAGE_BINS).astype(int), 0, COVERAGE_BINS - 1)
            coverage = len(np.unique(bins)) / COVERAGE_BINS
        else:
            coverage = 0.0
        actions.append(ActionStats(tag, units, lo, hi, float(col.mean()), float(col.std()),
                                   float((col <= lo + tol).mean()), float((col >= hi - tol).mean()), coverage,
                                   float(independent[j])))
    limits = twin_hard_limits(meta.plant, meta.observation_tags)
    observations = []
    any_out = np.zeros(len(ds), bool)
    for i, (tag, units) in enumerate(zip(meta.observation_tags, meta.observation_units, strict=True)):
        col = obs[:, i]
        lo_hi = limits.get(tag)
        out = None
        if lo_hi is not None:
            outside = (col < lo_hi[0]) | (col > lo_hi[1])
            any_out |= outside
            out = float(outside.mean())
        observations.append(ObservationStats(tag, units, float(col.min()), float(col.max()), float(col.mean()),
                                             float(col.std()), *(lo_hi or (None, None)), out, echoes[i]))
    returns = ds.episode_returns()
    episodes = len(returns)
    mean_return = float(returns.mean()) if episodes else None
    note = ""
    if meta.format_version is None or meta.extra.get("action_bounds") == "the data's own extremes":
        # the action bounds are the data's own extremes: "at a bound" means at the recorded extreme
        note = "; ".join(n for n in (note, "action bounds are the data's own extremes") if n)
    return DatasetReport(meta.plant, len(ds), actions, observations, episodes, mean_return, note,
                         float(any_out.mean()) if limits else None)


def _independent(obs: np.ndarray, acts: np.ndarray, span: np.ndarray) -> np.ndarray:
    """Per action: the std of its residual after a least-squares fit on the observations
    (standardised, with a constant), as a share of its span; NaN with fewer than ten rows
    per coefficient (a fit that explains anything)."""
    if len(obs) < 10 * (obs.shape[1] + 1):
        return np.full(acts.shape[1], np.nan)
    sd = obs.std(axis=0)
    x = np.hstack([(obs - obs.mean(axis=0)) / np.where(sd > 0, sd, 1.0), np.ones((len(obs), 1))])
    coef, *_ = np.linalg.lstsq(x, acts, rcond=None)
    span = np.where(span > 0, span, np.ptp(acts, axis=0))
    return (acts - x @ coef).std(axis=0) / np.where(span > 0, span, 1.0)


def echoed_action(ds: Dataset, i: int, tag: str) -> str | None:
    """The action observation ``i`` echoes: the action's own tag, or a readback whose next
    value follows the action taken."""
    meta = ds.meta
    if tag in meta.action_tags:
        return tag
    nxt = ds.next_observations[:, i].astype(np.float64)
    if len(nxt) < 3 or nxt.std() == 0:
        return None
    for j, action in enumerate(meta.action_tags):
        act = ds.actions[:, j].astype(np.float64)
        span = float(meta.action_high[j] - meta.action_low[j]) or float(np.ptp(act))
        if act.std() == 0 or span <= 0:
            continue
        close = float(np.median(np.abs(nxt - act))) <= ECHO_SHARE_OF_SPAN * span
        if close and float(np.corrcoef(nxt, act)[0, 1]) >= ECHO_CORRELATION:
            return action
    return None


def twin_hard_limits(plant: str, tags: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    """The hard limits of ``plant``'s twin for the tags it has (empty: no twin, or other tags)."""
    from edgewarden.simulators.plants import make_plant, plant_names

    if plant not in plant_names():
        return {}
    spec = make_plant(plant, seed=0).spec
    if not set(spec.observation_names()) <= set(tags):
        return {}
    return {lim.name: (float(lim.hard_low), float(lim.hard_high)) for lim in spec.objective.limits}
