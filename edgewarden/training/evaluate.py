"""Evaluate a policy on the twin: return, normalised score, violations, would-be shield work.

* **Return**: undiscounted sum of the env's reward per episode, ``episodes`` episodes run
  in lock-step (one batch inference per step), env ``i`` reset with ``seed + i`` and
  randomised targets, so every policy meets the same episodes.
* **Normalised score**: ``100 * (R - R_random) / (R_expert - R_random)`` with the random
  and expert behaviour policies (edgewarden.training.behaviour) run on the same episodes: 0 is
  random, 100 is the expert PI controller.
* **Violation rate**: fraction of steps whose observations are outside a hard limit (the
  env's ``info["cost"]``). Episodes run to the horizon (``terminate_on_hard=False``):
  with termination, an episode that trips early stops collecting tracking cost and can
  score *better* than one that holds the plant, so returns would reward tripping. Here a
  step outside the limits pays the hard penalty every step instead.
* **Shield rate**: fraction of steps where the gateway's action shield would have
  changed the action: outside the bounds, or a change faster than the configured
  ``max_rate`` (``SHIELD_MAX_RATE``, the numbers of ``examples/<plant>.toml``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from edgewarden.training.behaviour import make_behaviour

__all__ = ["SHIELD_MAX_RATE", "EvalResult", "evaluate_policy", "reference_returns", "rollout", "twin_mismatch"]


def twin_mismatch(plant: str, observations: tuple[str, ...] | list[str] | None,
                  actions: tuple[str, ...] | list[str] | None) -> str | None:
    """Why a policy with these tags cannot be rolled out on ``plant``'s twin, or None.
    ``None`` tags: a behaviour policy of the twin itself (nothing to compare)."""
    from edgewarden.simulators.gym_env import make_env
    from edgewarden.simulators.plants import plant_names

    if plant not in plant_names():
        return (f"plant {plant!r} has no twin to roll a policy out on (twins: {', '.join(plant_names())}); for a "
                "plant without one, `edgewarden train report POLICY --dataset DATA.h5` reports agreement with its "
                "data, value estimates and support")
    env = make_env(plant)
    if observations is not None and tuple(observations) != tuple(env.observation_names):
        return (f"the policy reads {', '.join(observations)}; the {plant} twin has {', '.join(env.observation_names)}: "
                "a policy runs on the plant whose tags it was trained on")
    # actions by count: an export names them as the gateway's setpoint tags (coolant_flow_sp),
    # the twin's env as the outputs they set (coolant_flow)
    if actions is not None and len(actions) != len(env.action_names):
        return (f"the policy drives {len(actions)} action(s) ({', '.join(actions)}); the {plant} twin takes "
                f"{len(env.action_names)} ({', '.join(env.action_names)})")
    return None

# Per action, engineering units per second; as in examples/<plant>.toml [safety.actions.*].
SHIELD_MAX_RATE: dict[str, tuple[float, ...]] = {
    "cstr": (100.0, 50.0),
    "tanks": (2.0, 2.0, 0.2, 0.2),
    "hvac": (3.0, 3.0, 200.0),
}

PolicyFn = Callable[[np.ndarray], np.ndarray]  # (n, n_obs) eng. units -> (n, n_act) eng. units


@dataclass(frozen=True)
class EvalResult:
    mean_return: float
    std_return: float
    normalized_score: float
    violation_rate: float
    shield_rate: float
    episodes: int
    steps: int
    random_return: float
    expert_return: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def rollout(plant: str, policy: PolicyFn | str, *, episodes: int, seed: int,
            horizon_s: float | None = None, record: bool = False) -> dict[str, object]:
    """Run ``episodes`` episodes in lock-step; ``policy`` is a batch function or the name
    of a behaviour policy. Returns returns, step/violation/shield counts (and the
    trajectory of episode 0 when ``record``)."""
    from edgewarden.simulators.gym_env import make_env

    envs = [make_env(plant, horizon_s=horizon_s, randomize_targets=True, terminate_on_hard=False)
            for _ in range(episodes)]
    obs = np.stack([e.reset(seed=seed + i)[0] for i, e in enumerate(envs)])
    if isinstance(policy, str):
        policy = make_behaviour(policy, envs[0], plant=plant, n_envs=episodes, seed=seed)
    spec = envs[0].spec_plant
    lo, hi = spec.action_low, spec.action_high
    rate = np.asarray(SHIELD_MAX_RATE.get(plant, (np.inf,) * lo.size), float) * envs[0].dt_s
    alive = np.ones(episodes, bool)
    ret = np.zeros(episodes)
    last = np.tile(spec.nominal_action, (episodes, 1))
    steps = viol = shield = 0
    traj: list[np.ndarray] = []
    while alive.any():
        act = np.asarray(policy(obs), dtype=np.float64).reshape(episodes, -1)
        for i in np.flatnonzero(alive):
            a = act[i]
            if np.any(a < lo - 1e-6) or np.any(a > hi + 1e-6) or np.any(np.abs(a - last[i]) > rate + 1e-6):
                shield += 1
            last[i] = a
            o, r, term, trunc, info = envs[i].step(a)
            if record and i == 0:
                traj.append(np.concatenate([obs[0], a, [r]]))
            obs[i] = o
            ret[i] += r
            steps += 1
            viol += int(info["cost"] > 0)
            if term or trunc:
                alive[i] = False
    out: dict[str, object] = {"returns": ret, "steps": steps, "violations": viol, "shield": shield}
    if record:
        out["trajectory"] = np.stack(traj)
        out["columns"] = list(envs[0].observation_names) + list(envs[0].action_names) + ["reward"]
    return out


_REF_CACHE: dict[tuple[str, int, int, float | None], tuple[float, float]] = {}


def reference_returns(plant: str, *, episodes: int, seed: int, horizon_s: float | None = None) -> tuple[float, float]:
    """Mean returns of the random and expert behaviour policies on the same episodes."""
    key = (plant, episodes, seed, horizon_s)
    if key not in _REF_CACHE:
        r = float(np.mean(rollout(plant, "random", episodes=episodes, seed=seed, horizon_s=horizon_s)["returns"]))
        e = float(np.mean(rollout(plant, "expert", episodes=episodes, seed=seed, horizon_s=horizon_s)["returns"]))
        _REF_CACHE[key] = (r, e)
    return _REF_CACHE[key]


def evaluate_policy(plant: str, policy: PolicyFn | str, *, episodes: int = 10, seed: int = 1000,
                    horizon_s: float | None = None) -> EvalResult:
    res = rollout(plant, policy, episodes=episodes, seed=seed, horizon_s=horizon_s)
    rets = np.asarray(res["returns"], float)
    r_rand, r_exp = reference_returns(plant, episodes=episodes, seed=seed, horizon_s=horizon_s)
    score = 100.0 * (rets.mean() - r_rand) / (r_exp - r_rand) if r_exp != r_rand else float("nan")
    steps = int(res["steps"])  # type: ignore[arg-type]
    return EvalResult(mean_return=float(rets.mean()), std_return=float(rets.std()), normalized_score=float(score),
                      violation_rate=int(res["violations"]) / steps, shield_rate=int(res["shield"]) / steps,  # type: ignore[arg-type]
                      episodes=episodes, steps=steps, random_return=r_rand, expert_return=r_exp)
