"""Behaviour policies of graded quality, for collecting datasets from the twins.

* ``random``: uniform over the action bounds.
* ``expert``: a well-tuned PI controller per tracking loop (gains below, tuned on the
  plant model), other actions at their nominal value.
* ``medium``: the same loops deliberately detuned (a quarter of the gain, no integral
  action) plus Gaussian noise on every action, per plant in :data:`MEDIUM`: white noise
  of 10 % of each action's range by default (CSTR, HVAC); on the tanks a *drifting*
  operator, noise of 30 % of the range with a 300 s correlation time (an
  Ornstein-Uhlenbeck process), because white noise is filtered away by the tanks and
  left the detuned loop at ~99 normalised, i.e. no room to learn anything better.
* ``mixed``: each episode is run by random, medium or expert with equal probability,
  drawn from the collection seed.

Loops are declared per plant in :data:`LOOPS`; a plant with no entry can only be
collected with ``random`` (a clear error says so). Every policy works on a batch of
observations (one row per vectorised env) in engineering units, and is stateful only
through its integrators, which :meth:`Behaviour.reset` clears per env.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LOOPS", "MEDIUM", "POLICIES", "Behaviour", "Detune", "Loop", "make_behaviour"]

POLICIES = ("random", "medium", "expert", "mixed")


@dataclass(frozen=True)
class Loop:
    """``u[action] = bias + sign * (kp * e + ki * integral(e))``, ``e = obs - target``."""

    observation: str
    target: str
    action: str
    kp: float  # action units per observation unit
    ki: float  # action units per (observation unit * second)
    sign: float = 1.0  # +1: more action lowers the observation (cooling), -1: raises it


# Tuned on the plant models with the env's control period (see docs/training.md).
LOOPS: dict[str, tuple[Loop, ...]] = {
    "cstr": (Loop("T", "T_sp", "coolant_flow", kp=12.0, ki=0.4, sign=1.0),),
    # First guesses, checked only in that expert > medium > random on a few episodes.
    "tanks": (Loop("h1", "h1_sp", "pump1", kp=1.0, ki=0.02, sign=-1.0),
              Loop("h2", "h2_sp", "pump2", kp=1.0, ki=0.02, sign=-1.0)),
    "hvac": (Loop("T_zone", "T_zone_sp", "heating", kp=3.0, ki=0.002, sign=-1.0),
             Loop("T_zone", "T_zone_sp", "cooling", kp=3.0, ki=0.002, sign=1.0)),
}


@dataclass(frozen=True)
class Detune:
    """How ``medium`` spoils the expert loops: ``u = nominal + gain * kp * e + noise``."""

    gain: float = 0.25  # fraction of the expert's kp (and no integral action)
    noise: float = 0.1  # noise std as a fraction of each action's range
    noise_tau_s: float = 0.0  # noise correlation time (0: white noise, a fresh draw every step)


# Chosen so that medium lands near the middle of the random..expert scale on the
# evaluation episodes (docs/training.md: CSTR ~56, tanks ~57 normalised).
MEDIUM: dict[str, Detune] = {
    "tanks": Detune(gain=0.25, noise=0.3, noise_tau_s=300.0),
}


class Behaviour:
    """A batch behaviour policy for ``n_envs`` envs of one plant."""

    def __init__(self, kind: str, *, obs_names: tuple[str, ...], act_names: tuple[str, ...],
                 act_low: np.ndarray, act_high: np.ndarray, nominal: np.ndarray, plant: str,
                 n_envs: int, dt_s: float, seed: int) -> None:
        if kind not in POLICIES:
            raise ValueError(f"unknown behaviour policy {kind!r} (known: {', '.join(POLICIES)})")
        self.kind = kind
        self.rng = np.random.default_rng(seed)
        self.lo, self.hi = np.asarray(act_low, float), np.asarray(act_high, float)
        self.nominal = np.asarray(nominal, float)
        self.n, self.dt = n_envs, dt_s
        loops = LOOPS.get(plant, ())
        if kind != "random" and not loops:
            raise ValueError(f"plant {plant!r} has no controller loops declared in "
                             f"edgewarden.training.behaviour.LOOPS: only --policy random works for it")
        self.loops = [(obs_names.index(lp.observation), obs_names.index(lp.target),
                       act_names.index(lp.action), lp) for lp in loops]
        self.integ = np.zeros((n_envs, len(self.loops)))
        self.detune = MEDIUM.get(plant, Detune())
        self.noise_std = self.detune.noise * (self.hi - self.lo)
        self.noise_keep = float(np.exp(-dt_s / self.detune.noise_tau_s)) if self.detune.noise_tau_s > 0 else 0.0
        self.noise = np.zeros((n_envs, self.lo.size))
        self.who = np.array([kind] * n_envs, dtype=object)
        for i in range(n_envs):
            self.reset(i)

    def reset(self, i: int) -> None:
        """A new episode starts in env ``i``."""
        self.integ[i] = 0.0
        if self.noise_keep > 0.0:  # a drifting operator starts anywhere in its stationary spread
            self.noise[i] = self.rng.normal(0.0, self.noise_std)
        if self.kind == "mixed":
            self.who[i] = ("random", "medium", "expert")[int(self.rng.integers(3))]

    def _pid(self, obs: np.ndarray, detuned: bool) -> np.ndarray:
        u = np.broadcast_to(self.nominal, (obs.shape[0], self.nominal.size)).copy()
        for k, (io, it, ia, lp) in enumerate(self.loops):
            e = obs[:, io] - obs[:, it]
            if detuned:
                u[:, ia] += lp.sign * self.detune.gain * lp.kp * e
            else:
                self.integ[:, k] += e * self.dt
                # anti-windup: keep the integral term within the action's range
                span = self.hi[ia] - self.lo[ia]
                lim = span / max(lp.ki, 1e-12)
                self.integ[:, k] = np.clip(self.integ[:, k], -lim, lim)
                u[:, ia] += lp.sign * (lp.kp * e + lp.ki * self.integ[:, k])
        return u

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, float)
        n = obs.shape[0]
        rand = self.rng.uniform(self.lo, self.hi, (n, self.lo.size))
        if self.kind == "random":
            return rand
        expert = self._pid(obs, detuned=False)
        # Noise: x <- keep x + sqrt(1 - keep^2) N(0, std^2), stationary std; keep = 0 is white.
        k = self.noise_keep
        self.noise[:n] = k * self.noise[:n] + np.sqrt(1.0 - k * k) * self.rng.normal(0.0, self.noise_std, (n, self.lo.size))
        medium = self._pid(obs, detuned=True) + self.noise[:n]
        who = self.who[:n]
        out = np.where((who == "random")[:, None], rand,
                       np.where((who == "medium")[:, None], medium, expert))
        return np.clip(out, self.lo, self.hi)


def make_behaviour(kind: str, env, *, plant: str, n_envs: int, seed: int) -> Behaviour:
    """A behaviour policy for a (single) :class:`edgewarden.simulators.gym_env.TwinEnv`'s layout."""
    spec = env.spec_plant
    return Behaviour(kind, obs_names=env.observation_names, act_names=env.action_names,
                     act_low=spec.action_low, act_high=spec.action_high,
                     nominal=spec.nominal_action, plant=plant, n_envs=n_envs, dt_s=env.dt_s,
                     seed=seed)
