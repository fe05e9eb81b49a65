"""Collect D4RL-layout datasets from the twins' Gymnasium envs with a behaviour policy.

Runs ``n_envs`` envs in gymnasium's vector API (``edgewarden.simulators.gym_env.make_vector_env``,
same-step autoreset, so the true last observation of an episode is in
``info["final_obs"]``), asks the batch behaviour policy for all envs at once, and writes
exactly ``steps`` transitions. Episodes run to the horizon (``terminate_on_hard=False``,
as in edgewarden.training.evaluate: a step outside a hard limit pays the hard penalty each step, so
tripping early is never cheaper than holding the plant). Targets are randomised per episode (the env's
``target_ranges``) so a dataset covers the operating range, not one setpoint.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgewarden.training.behaviour import make_behaviour
from edgewarden.training.datasets import DatasetMeta, write
from edgewarden.training.progress import Progress

__all__ = ["CollectResult", "collect"]


@dataclass(frozen=True)
class CollectResult:
    meta: DatasetMeta
    seconds: float
    episodes: int
    mean_return: float

    @property
    def transitions_per_s(self) -> float:
        return self.meta.n / max(self.seconds, 1e-9)


def collect(plant: str, policy: str, steps: int, out: Path, *, seed: int = 0, n_envs: int = 8,
            progress: bool = True) -> CollectResult:
    from gymnasium.vector import AutoresetMode

    from edgewarden.simulators.gym_env import make_env, make_vector_env

    if steps < 1:
        raise ValueError("steps must be >= 1")
    probe = make_env(plant)
    venv = make_vector_env(plant, n_envs, autoreset_mode=AutoresetMode.SAME_STEP, randomize_targets=True,
                            terminate_on_hard=False)
    beh = make_behaviour(policy, probe, plant=plant, n_envs=n_envs, seed=seed + 10_007)
    n_obs, n_act = len(probe.observation_names), len(probe.action_names)
    buf = {"observations": np.empty((steps, n_obs), np.float32), "actions": np.empty((steps, n_act), np.float32),
           "rewards": np.empty(steps, np.float32), "next_observations": np.empty((steps, n_obs), np.float32),
           "terminals": np.zeros(steps, bool), "timeouts": np.zeros(steps, bool)}
    t0 = time.perf_counter()
    obs, _ = venv.reset(seed=seed)
    ep_ret = np.zeros(n_envs)
    returns: list[float] = []
    bar = Progress(steps, f"collect {plant}/{policy}", enabled=progress)
    k = 0
    while k < steps:
        act = beh(obs)
        nxt, rew, term, trunc, info = venv.step(act.astype(np.float32))
        real_next = nxt.copy()
        done = term | trunc
        if done.any():
            final = info["final_obs"]
            for i in np.flatnonzero(done):
                real_next[i] = final[i]
        take = min(n_envs, steps - k)
        sl = slice(k, k + take)
        buf["observations"][sl] = obs[:take]
        buf["actions"][sl] = act[:take]
        buf["rewards"][sl] = rew[:take]
        buf["next_observations"][sl] = real_next[:take]
        buf["terminals"][sl] = term[:take]
        buf["timeouts"][sl] = trunc[:take]
        k += take
        ep_ret += rew
        for i in np.flatnonzero(done):
            returns.append(float(ep_ret[i]))
            ep_ret[i] = 0.0
            beh.reset(int(i))
        obs = nxt
        bar.update(take)
    # The last transition of the file ends an episode either way (a cut by the budget).
    buf["timeouts"][-1] |= not buf["terminals"][-1]
    bar.close()
    venv.close()
    spec = probe.spec_plant
    meta = DatasetMeta(
        plant=plant, observation_tags=probe.observation_names, observation_units=probe.observation_units,
        action_tags=probe.action_names, action_units=probe.action_units,
        action_low=tuple(float(v) for v in spec.action_low), action_high=tuple(float(v) for v in spec.action_high),
        behaviour_policy=policy, seed=seed,
        extra={"n_envs": n_envs, "dt_s": probe.dt_s, "horizon_s": probe.horizon_s, "randomize_targets": True,
               "terminate_on_hard": False},
    )
    secs = time.perf_counter() - t0
    meta = write(out, buf, meta)
    mean_ret = float(np.mean(returns)) if returns else float("nan")
    return CollectResult(meta=meta, seconds=secs, episodes=len(returns), mean_return=mean_ret)

