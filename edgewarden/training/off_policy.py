"""An off-policy estimate on the plant's own history: is a candidate policy better than the
controller that wrote the history, and how sure can one be? (``edgewarden train report``;
the figures go into the model's manifest, which ``model promote`` reads.)

The route is model-based, chosen over fitted Q evaluation because it says when it does
not know: FQE on the history of one PID extrapolates to actions the PID never took with
nothing to flag it, while a dynamics model fitted to that history shows the missing
action variation as disagreement between its bootstrap fits.

1. **Dynamics**: ``next − obs`` as an affine function of (obs, action), ridge regression on
   standardised columns; ``members`` fits on block-bootstrap resamples of the history
   (blocks of ``BLOCK`` rows keep its autocorrelation). The setpoints of the reward's
   track terms are *exogenous* (the plant's operator moves them, not the actions): every
   rollout replays them as recorded.
2. **Rollouts**: from ``starts`` states of the history (evenly spaced windows of
   ``horizon`` rows inside one run), in every member: the candidate in closed loop
   (its actions clipped to the bounds), and the incumbent in the same model, so that both
   estimates carry the same model error. The incumbent runs in closed loop too when the
   history names it: PID loops (``train from-audit`` keeps ``[policy.pid]`` and the cycle
   period from the log), run by the gateway's own PidBank, started bumpless from the
   action written just before each window. Otherwise its recorded actions are *replayed* (open loop); a
   history written under an excitation cannot be judged that way (the replay would carry
   the excitation and flatter the candidate): its verdict is ``unreliable``.
   Score: mean reward per step (:mod:`edgewarden.training.reward`).
3. **Confidence**: the difference candidate − incumbent per window, bootstrapped within
   each member in blocks of neighbouring windows that overlap (a block spans a horizon:
   overlapping windows share their rows and are not independent draws); the interval is
   the lowest 5th and the highest 95th percentile over members (model and sampling
   uncertainty both). A history with fewer than ``MIN_INDEPENDENT`` windows' worth of
   rows that do not overlap is ``unreliable``: too short to say, for that horizon.
4. **Is the model fit to judge?** The incumbent's replayed score against its *real* score
   in the same windows (``replay_error``, relative to the real score's size and spread),
   and the share of the candidate's rollout states outside the history's range
   (``outside``). Past ``MAX_REPLAY_ERROR`` or ``MAX_OUTSIDE`` the verdict is
   ``unreliable``: the history cannot say.

Verdict: ``better`` when the interval lies above zero, ``worse`` when below, otherwise
``not shown better``. Only ``better`` lets ``model promote`` through without ``--force``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgewarden.training.reward import RewardSpec

__all__ = ["OffPolicyEstimate", "estimate"]

BLOCK = 32  # rows per bootstrap block
RIDGE = 1e-3  # on standardised columns
MAX_REPLAY_ERROR = 0.25
MAX_OUTSIDE = 0.2
INTERVAL = (5.0, 95.0)
MIN_INDEPENDENT = 8  # windows of the horizon that do not overlap


@dataclass
class OffPolicyEstimate:
    method: str
    reward: str
    horizon: int
    starts: int
    members: int
    candidate: float  # mean reward per step, in the model
    incumbent: float  # the incumbent in the model: closed loop when known, else its actions replayed
    incumbent_real: float  # what the history scored in the same windows
    difference: float  # candidate − incumbent
    low: float
    high: float
    replay_error: float
    outside: float
    verdict: str
    behaviour: str = "unknown"  # the controller that wrote the history (the dataset's behaviour_policy)
    incumbent_run: str = "replayed"  # "closed loop" (its PID loops) or "replayed" (its recorded actions)
    independent: int = 0  # windows of the horizon that do not overlap
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        return (f"{self.verdict}: mean reward per step {self.candidate:.4g} against the incumbent's "
                f"{self.incumbent:.4g} ({self.incumbent_run}; {self.incumbent_real:.4g} as recorded), difference "
                f"{self.difference:+.4g} [{self.low:+.4g}, {self.high:+.4g}] over {self.starts} windows of "
                f"{self.horizon} steps, {self.members} models; replay error {self.replay_error:.0%}, "
                f"{self.outside:.0%} of the candidate's states outside the history"
                + (f" ({self.note})" if self.note else ""))


def _windows(ends: np.ndarray, horizon: int, starts: int) -> np.ndarray:
    """Up to ``starts`` evenly spaced first rows of windows of ``horizon`` rows within one run."""
    run_id = np.concatenate([[0], np.cumsum(ends[:-1])])
    t = np.arange(max(0, len(ends) - horizon + 1))
    firsts = t[run_id[t + horizon - 1] == run_id[t]]
    if len(firsts) == 0:
        return firsts
    return firsts[np.unique(np.linspace(0, len(firsts) - 1, min(starts, len(firsts))).astype(int))]


def _fit(x: np.ndarray, y: np.ndarray, rows: np.ndarray) -> np.ndarray:
    xs, ys = x[rows], y[rows]
    return np.linalg.solve(xs.T @ xs + RIDGE * len(rows) * np.eye(x.shape[1]), xs.T @ ys)


def estimate(data: Any, act_fn: Callable[[np.ndarray], np.ndarray], spec: RewardSpec, *, horizon: int = 100,
             starts: int = 64, members: int = 5, seed: int = 0) -> OffPolicyEstimate:
    """The estimate for ``act_fn`` (obs batch → actions in engineering units) on ``data``
    (a loaded dataset: observations, actions, next_observations, terminals, timeouts, meta)."""
    meta = data.meta
    obs = np.asarray(data.observations, np.float64)
    act = np.asarray(data.actions, np.float64)
    nxt = np.asarray(data.next_observations, np.float64)
    ends = np.asarray(data.terminals, bool) | np.asarray(data.timeouts, bool)
    ends[-1] = True
    spec = spec.bind(meta.observation_tags)
    exo = spec.exogenous(meta.observation_tags)
    low, high = np.asarray(meta.action_low, np.float64), np.asarray(meta.action_high, np.float64)
    span = high - low
    firsts = _windows(ends, horizon, starts)
    if len(firsts) < 2:
        raise ValueError(f"the history has fewer than 2 runs of {horizon} consecutive rows (shorten --horizon)")
    rng = np.random.default_rng(seed)
    m = len(firsts)
    spacing = max(1, int(np.median(np.diff(firsts))))
    block = min(m, -(-horizon // spacing))  # neighbouring windows that share rows
    blocks = np.arange(m - block + 1)[:, None] + np.arange(block)[None, :]
    run_of = np.concatenate([[0], np.cumsum(ends[:-1])])[firsts]  # the run each window lies in
    independent = sum(int(np.ptp(firsts[run_of == r])) // horizon + 1 for r in np.unique(run_of))

    mu_o, sd_o = obs.mean(axis=0), np.where(obs.std(axis=0) > 0, obs.std(axis=0), 1.0)
    mu_a, sd_a = act.mean(axis=0), np.where(act.std(axis=0) > 0, act.std(axis=0), 1.0)

    def features(o: np.ndarray, a: np.ndarray) -> np.ndarray:
        return np.hstack([(o - mu_o) / sd_o, (a - mu_a) / sd_a, np.ones((len(o), 1))])

    x, y = features(obs, act), (nxt - obs) / sd_o
    n = len(obs)
    weights = []
    for _ in range(members):  # block bootstrap
        picks = rng.integers(0, n, size=max(1, n // BLOCK))
        rows = (picks[:, None] + np.arange(BLOCK)[None, :]).ravel() % n
        weights.append(_fit(x, y, rows))

    lo_obs, hi_obs = np.percentile(obs, [0.5, 99.5], axis=0)
    margin = 0.1 * np.maximum(hi_obs - lo_obs, 1e-9)
    lo_obs, hi_obs = lo_obs - margin, hi_obs + margin
    before = np.maximum(firsts - 1, 0)
    fresh = (firsts == 0) | ends[before]  # a window that starts a run moves from its own first action
    prev0 = np.where(fresh[:, None], act[firsts], act[before])

    def rollout(w: np.ndarray, policy: Callable[[np.ndarray, int, np.ndarray], np.ndarray]
                ) -> tuple[np.ndarray, float]:
        s, prev = obs[firsts].copy(), prev0.copy()
        total, outside = np.zeros(m), 0
        for h in range(horizon):
            a = np.clip(policy(s, h, prev), low, high)
            s = s + (features(s, a) @ w) * sd_o
            s[:, exo] = nxt[firsts + h][:, exo]
            total += spec(s, a, prev, span)
            outside += int(((s < lo_obs) | (s > hi_obs)).any(axis=1).sum())
            prev = a
        return total / horizon, outside / (m * horizon)

    def candidate(s: np.ndarray, _h: int, _prev: np.ndarray) -> np.ndarray:
        return np.asarray(act_fn(s.astype(np.float32)), np.float64).reshape(m, -1)

    def recorded(_s: np.ndarray, h: int, _prev: np.ndarray) -> np.ndarray:
        return act[firsts + h]

    loops, period = meta.extra.get("incumbent_pid"), meta.extra.get("period_s")
    known = isinstance(loops, dict) and loops and isinstance(period, (int, float)) and period > 0
    pid_loop = _pid_incumbent(meta, loops, float(period), m) if known else None

    real = np.zeros(m)
    prev = prev0.copy()
    for h in range(horizon):
        real += spec(nxt[firsts + h], act[firsts + h], prev, span)
        prev = act[firsts + h]
    real /= horizon

    cand, inc, replayed, outs, lows, highs = [], [], [], [], [], []
    for w in weights:
        c, out = rollout(w, candidate)
        r, _ = rollout(w, recorded)
        i = r if pid_loop is None else rollout(w, pid_loop())[0]
        cand.append(c)
        inc.append(i)
        replayed.append(r)
        outs.append(out)
        d = c - i
        boot = d[blocks[rng.integers(0, len(blocks), size=(500, -(-m // block)))].reshape(500, -1)[:, :m]
                 ].mean(axis=1)
        lo_d, hi_d = np.percentile(boot, INTERVAL)
        lows.append(lo_d)
        highs.append(hi_d)
    cand_mean, inc_mean, real_mean = float(np.mean(cand)), float(np.mean(inc)), float(real.mean())
    replay_error = abs(float(np.mean(replayed)) - real_mean) / max(abs(real_mean) + float(real.std()), 1e-12)
    excited = bool(meta.extra.get("excited_rows"))
    notes = []
    if independent < MIN_INDEPENDENT:
        notes.append(f"only {independent} windows of {horizon} rows that do not overlap (at least {MIN_INDEPENDENT}): "
                     "a longer history, or a shorter --horizon")
    if excited and pid_loop is None:
        notes.append("the history was written under an excitation and its controller is not known to run it in "
                     "closed loop: its replayed actions carry the excitation")
    note = "; ".join(notes)
    outside = float(np.mean(outs))
    lo_d, hi_d = float(min(lows)), float(max(highs))
    if not (np.isfinite(cand_mean) and np.isfinite(inc_mean)) or replay_error > MAX_REPLAY_ERROR \
            or outside > MAX_OUTSIDE or note:
        verdict = "unreliable"
    elif lo_d > 0:
        verdict = "better"
    elif hi_d < 0:
        verdict = "worse"
    else:
        verdict = "not shown better"
    return OffPolicyEstimate(
        method="rollouts on a bootstrapped affine dynamics model fitted to the history",
        reward=spec.describe(), horizon=horizon, starts=m, members=members, candidate=cand_mean,
        incumbent=inc_mean, incumbent_real=real_mean, difference=cand_mean - inc_mean, low=lo_d, high=hi_d,
        replay_error=float(replay_error), outside=outside, verdict=verdict, behaviour=meta.behaviour_policy,
        incumbent_run="replayed" if pid_loop is None else "closed loop", independent=independent, note=note)


def _pid_incumbent(meta: Any, loops: dict[str, Any], period: float, m: int
                   ) -> Callable[[], Callable[[np.ndarray, int, np.ndarray], np.ndarray]]:
    """A maker of the incumbent's PID loops in closed loop over ``m`` windows at once (one
    bank per window, the gateway's own PidBank), bumpless from the action written before it."""
    from edgewarden.gateway.config import PidSpec
    from edgewarden.gateway.policy.fallback import PidBank

    specs = {a: PidSpec.model_validate(v) for a, v in loops.items()}
    low, high = np.asarray(meta.action_low, np.float64), np.asarray(meta.action_high, np.float64)

    def make() -> Callable[[np.ndarray, int, np.ndarray], np.ndarray]:
        banks = [PidBank(meta.action_tags, low, high, specs, list(meta.observation_tags)) for _ in range(m)]
        out = np.empty((m, len(meta.action_tags)))

        def run(s: np.ndarray, h: int, prev: np.ndarray) -> np.ndarray:
            for i, bank in enumerate(banks):
                if h == 0:
                    bank.track(s[i], prev[i])
                bank.compute(s[i], prev[i], period, out[i])
            return out

        return run

    return make
