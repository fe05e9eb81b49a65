"""Collect D4RL-layout datasets from the twins' Gymnasium envs with a behaviour policy.

Runs ``n_envs`` envs in gymnasium's vector API (``edgewarden.simulators.gym_env.make_vector_env``,
same-step autoreset, so the true last observation of an episode is in
``info["final_obs"]``), asks the batch behaviour policy for all envs at once, and writes
exactly ``steps`` transitions **in the D4RL layout**: each episode's rows are contiguous and in
time order (``next_observations[i] == observations[i+1]`` on every row that does not end an
episode), episodes in the order they ended, then each env's unfinished episode cut where
the budget ran out (``timeouts`` on its last row). Stepping, seeds and actions are those of
a row-by-row interleaved collection; only the rows' order differs. Episodes run to the horizon (``terminate_on_hard=False``,
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


def episode_order(ends: np.ndarray) -> np.ndarray:
    """Row order (indices into the step-major flattening of ``ends``, shape (steps, envs)) that
    puts each env's episodes contiguously: finished episodes in the order they ended (ties by
    env), then each env's unfinished one, by env."""
    n_steps, n_envs = ends.shape
    segments: list[tuple[int, int, int, int]] = []  # (end step, env, first step, last step)
    for i in range(n_envs):
        first = 0
        for t in np.flatnonzero(ends[:, i]):
            segments.append((int(t), i, first, int(t)))
            first = int(t) + 1
        if first < n_steps:
            segments.append((n_steps, i, first, n_steps - 1))  # unfinished: after every finished one
    segments.sort()
    if not segments:
        return np.zeros(0, np.int64)
    return np.concatenate([np.arange(a, b + 1) * n_envs + i for _, i, a, b in segments])


def episode_tails(n_steps: int, n_envs: int) -> np.ndarray:
    """Flat indices of each env's last staged row (where its unfinished episode is cut)."""
    return (n_steps - 1) * n_envs + np.arange(n_envs)


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
    n_steps = -(-steps // n_envs)  # vector steps; the last may hold more rows than the budget needs
    # staged step-major, (step, env, ...): reordered into episodes at the end
    stage = {k: np.empty((n_steps, n_envs) + v.shape[1:], v.dtype) for k, v in buf.items()}
    obs, _ = venv.reset(seed=seed)
    ep_ret = np.zeros(n_envs)
    returns: list[float] = []
    bar = Progress(steps, f"collect {plant}/{policy}", enabled=progress)
    for t in range(n_steps):
        act = beh(obs)
        nxt, rew, term, trunc, info = venv.step(act.astype(np.float32))
        real_next = nxt.copy()
        done = term | trunc
        if done.any():
            final = info["final_obs"]
            for i in np.flatnonzero(done):
                real_next[i] = final[i]
        for k, v in (("observations", obs), ("actions", act), ("rewards", rew), ("next_observations", real_next),
                     ("terminals", term), ("timeouts", trunc)):
            stage[k][t] = v
        ep_ret += rew
        for i in np.flatnonzero(done):
            returns.append(float(ep_ret[i]))
            ep_ret[i] = 0.0
            beh.reset(int(i))
        obs = nxt
        bar.update(min(n_envs, steps - t * n_envs))
    rows = episode_order(stage["terminals"] | stage["timeouts"])[:steps]
    for k, v in stage.items():
        buf[k][:] = v.reshape((n_steps * n_envs,) + v.shape[2:])[rows]
    # Every episode's last row says why it ended: an env's unfinished episode, and the one the
    # budget cut, end in a timeout.
    cut = np.zeros(steps, bool)
    cut[-1] = True
    flat_ends = np.zeros(n_steps * n_envs, bool)
    flat_ends[episode_tails(n_steps, n_envs)] = True
    cut |= flat_ends[rows]
    buf["timeouts"] |= cut & ~buf["terminals"]
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

