"""Gymnasium environments on the twins' plant models (needs the ``train`` extra).

One class, :class:`TwinEnv`, wraps any plant of :mod:`edgewarden.simulators.plants` — the very same
``PlantModel`` the served twins integrate, so a policy trained here sees the dynamics it
will meet behind the gateway. Nothing in the twin servers imports this module.

* **Observation** (``Box`` float32): the plant's observations, then its targets, in
  engineering units and in spec order — for the CSTR ``[T, CA, Tj, T_sp]``, the order of
  ``policy.observations`` in ``examples/cstr.toml``. Values are clipped to each signal's
  range (a transmitter saturates at its range too).
* **Action** (``Box`` float32): the plant's actions in engineering units with their real
  bounds (CSTR: ``[coolant_flow, feed_flow]`` in L/min, 0..200 each); out-of-range actions
  are clipped, NaN/inf raise ``ValueError``. ``normalize_actions=True`` gives a [-1, 1] Box
  mapped linearly onto the bounds instead (reward, info and the plant stay in engineering
  units; gymnasium's checker warns about non-normalised Boxes, which is only advice).
* **Step**: the action is held for ``dt_s`` simulated seconds (zero-order hold, as the PLC
  does between gateway cycles).
* **Reward / cost**: the plant's :class:`~edgewarden.simulators.plants.objective.Objective`
  (tracking, energy, soft and hard penalties); ``info["cost"]`` is 1.0 on a step that
  leaves a hard limit. ``info`` also holds ``tracking``, ``energy``, ``soft``, ``hard``
  and ``time_s``.
* **Termination** when a hard limit is left (the gateway would trip its e-stop there;
  ``terminate_on_hard=False`` keeps going); **truncation** at ``horizon_s``.
* **Seeding**: ``reset(seed=s)`` reseeds ``np_random``, from which the plant's own seed
  (process noise, initial spread) and any randomised targets are drawn, so a seeded
  episode is exactly reproducible.

Registered ids (registered on import of this module): ``edgewarden/Cstr-v0``,
``edgewarden/Tanks-v0``, ``edgewarden/Hvac-v0`` (those whose plant exists). ``gymnasium.make``
adds its usual checker/order wrappers; :func:`make_env` returns the bare env (faster).

:func:`make_vector_env` uses **gymnasium's own vector API** (``SyncVectorEnv``, or
``AsyncVectorEnv`` with ``asynchronous=True`` for one process per env).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, AsyncVectorEnv, SyncVectorEnv

from edgewarden.simulators.plants import PLANTS, make_plant, plant_class
from edgewarden.simulators.plants.base import PlantModel, PlantSpec
from edgewarden.simulators.plants.objective import Scorer

__all__ = ["ENV_IDS", "TwinEnv", "env_id", "make_env", "make_vector_env"]


class TwinEnv(gymnasium.Env[np.ndarray, np.ndarray]):
    """A plant model as a Gymnasium env. See the module docstring for the contract."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        plant: str = "cstr",
        *,
        horizon_s: float | None = None,
        dt_s: float | None = None,
        process_noise: float | np.ndarray = 0.0,
        randomize_targets: bool = False,
        terminate_on_hard: bool = True,
        normalize_actions: bool = False,
        plant_kwargs: dict[str, Any] | None = None,
        render_mode: str | None = None,
    ) -> None:
        if render_mode is not None:
            raise ValueError("TwinEnv has no render modes")
        cls = plant_class(plant)
        self.dt_s = float(cls.control_period_s if dt_s is None else dt_s)
        self.horizon_s = float(cls.horizon_s if horizon_s is None else horizon_s)
        if not (self.dt_s > 0 and math.isfinite(self.dt_s)):
            raise ValueError(f"dt_s must be a positive number of seconds, got {dt_s!r}")
        if not (self.horizon_s >= self.dt_s and math.isfinite(self.horizon_s)):
            raise ValueError(f"horizon_s must be >= dt_s, got {horizon_s!r}")
        self.max_steps = int(round(self.horizon_s / self.dt_s))
        self.plant: PlantModel = make_plant(plant, seed=0, process_noise=process_noise,
                                            **(plant_kwargs or {}))
        spec = self.plant.spec
        self.spec_plant: PlantSpec = spec
        self.randomize_targets = bool(randomize_targets)
        self.terminate_on_hard = bool(terminate_on_hard)
        sigs = spec.observations + spec.targets
        self.observation_names: tuple[str, ...] = tuple(s.name for s in sigs)
        self.observation_units: tuple[str, ...] = tuple(s.units for s in sigs)
        self.action_names: tuple[str, ...] = spec.action_names()
        self.action_units: tuple[str, ...] = tuple(s.units for s in spec.actions)
        self._obs_lo = np.array([s.low for s in sigs], dtype=np.float64)
        self._obs_hi = np.array([s.high for s in sigs], dtype=np.float64)
        self.observation_space = spaces.Box(self._obs_lo.astype(np.float32),
                                            self._obs_hi.astype(np.float32), dtype=np.float32)
        self.normalize_actions = bool(normalize_actions)
        self._a_lo, self._a_hi = spec.action_low, spec.action_high
        if self.normalize_actions:
            n_act = len(spec.actions)
            self.action_space = spaces.Box(-1.0, 1.0, (n_act,), dtype=np.float32)
        else:
            self.action_space = spaces.Box(self._a_lo.astype(np.float32),
                                           self._a_hi.astype(np.float32), dtype=np.float32)
        self._default_targets = np.array([s.default for s in spec.targets], dtype=np.float64)
        self._targets = self._default_targets.copy()
        self._target_ranges = [
            (spec.targets.index(next(t for t in spec.targets if t.name == name)), lo, hi)
            for name, lo, hi in spec.objective.target_ranges
        ]
        self._scorer = Scorer(spec.objective, spec.observation_names(),
                              tuple(s.name for s in spec.targets),
                              spec.action_low, spec.action_high)
        self._steps = 0

    # ---- gymnasium API ----------------------------------------------------------------
    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Options: ``targets`` {name: value} to set targets for this episode."""
        super().reset(seed=seed)
        self.plant.reset(seed=int(self.np_random.integers(0, 2**31 - 1)))
        self._targets = self._default_targets.copy()
        if self.randomize_targets:
            for i, lo, hi in self._target_ranges:
                self._targets[i] = self.np_random.uniform(lo, hi)
        if options and "targets" in options:
            self.set_targets(options["targets"])
        self._steps = 0
        return self._obs(), {"time_s": 0.0}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        u = self.engineering_action(action)
        self.plant.step(self.dt_s, u)
        self._steps += 1
        y = self.plant.observe()
        reward, info = self._scorer.score(y, u, self._targets)
        terminated = self.terminate_on_hard and info["hard"] > 0.0
        truncated = self._steps >= self.max_steps and not terminated
        info["time_s"] = self.plant.time_s
        return self._obs(y), reward, terminated, truncated, info

    # ---- extras -----------------------------------------------------------------------
    def engineering_action(self, action: np.ndarray) -> np.ndarray:
        """The action in engineering units, clipped to the bounds (maps [-1, 1] when
        ``normalize_actions``); NaN/inf raise ValueError."""
        u = np.asarray(action, dtype=np.float64).reshape(-1)
        if u.shape != self._a_lo.shape or not np.all(np.isfinite(u)):
            raise ValueError(f"action must be {self._a_lo.size} finite values, got {action!r}")
        if self.normalize_actions:
            u = self._a_lo + (np.clip(u, -1.0, 1.0) + 1.0) * 0.5 * (self._a_hi - self._a_lo)
        return np.clip(u, self._a_lo, self._a_hi)

    @property
    def targets(self) -> dict[str, float]:
        return {s.name: float(v) for s, v in zip(self.spec_plant.targets, self._targets,
                                                 strict=True)}

    def set_targets(self, targets: dict[str, float]) -> None:
        """Change targets (e.g. a setpoint step) from the next observation on."""
        names = [s.name for s in self.spec_plant.targets]
        for name, value in targets.items():
            if name not in names:
                raise KeyError(f"plant {self.spec_plant.name!r} has no target {name!r} "
                               f"(known: {', '.join(names) or 'none'})")
            self._targets[names.index(name)] = float(value)

    def _obs(self, y: np.ndarray | None = None) -> np.ndarray:
        y = self.plant.observe() if y is None else y
        full = np.concatenate([y, self._targets])
        return np.clip(full, self._obs_lo, self._obs_hi).astype(np.float32)


def env_id(plant: str) -> str:
    """The registered id of a plant's env: ``edgewarden/<Plant>-v0``."""
    return f"edgewarden/{plant.capitalize()}-v0"


ENV_IDS: dict[str, str] = {}


def _register() -> None:
    for plant in PLANTS:
        eid = env_id(plant)
        ENV_IDS[plant] = eid
        if eid not in gymnasium.registry:
            gymnasium.register(id=eid, entry_point="edgewarden.simulators.gym_env:TwinEnv",
                               kwargs={"plant": plant}, disable_env_checker=False)


_register()


def make_env(plant: str, *, seed: int | None = None, horizon_s: float | None = None,
             dt_s: float | None = None, **kw: Any) -> TwinEnv:
    """A bare :class:`TwinEnv`; with ``seed`` it is reset once with that seed (the next
    ``reset()`` without a seed continues the seeded stream). ``kw`` go to TwinEnv."""
    env = TwinEnv(plant, horizon_s=horizon_s, dt_s=dt_s, **kw)
    # the registered EnvSpec with these arguments, as gymnasium.make would record it
    env.spec = dataclasses.replace(gymnasium.spec(env_id(plant)), kwargs={
        "plant": plant, "horizon_s": horizon_s, "dt_s": dt_s, **kw})
    if seed is not None:
        env.reset(seed=seed)
    return env


def make_vector_env(plant: str, n: int, seed: int | None = None, *,
                    asynchronous: bool = False,
                    autoreset_mode: AutoresetMode = AutoresetMode.NEXT_STEP,
                    **kw: Any) -> SyncVectorEnv | AsyncVectorEnv:
    """``n`` TwinEnvs in gymnasium's vector API; with ``seed``, reset with seeds
    ``seed, seed+1, ...`` (gymnasium's convention). ``kw`` go to each TwinEnv."""
    if n < 1:
        raise ValueError("n must be >= 1")
    fns = [lambda: TwinEnv(plant, **kw) for _ in range(n)]
    venv: SyncVectorEnv | AsyncVectorEnv
    if asynchronous:
        venv = AsyncVectorEnv(fns, autoreset_mode=autoreset_mode)
    else:
        venv = SyncVectorEnv(fns, autoreset_mode=autoreset_mode)
    if seed is not None:
        venv.reset(seed=seed)
    return venv
