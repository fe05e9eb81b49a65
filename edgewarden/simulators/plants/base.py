"""The plant-model interface every twin plant implements.

A plant is a deterministic ODE model with named observations, actions, operator targets
and disturbances, each described once by a :class:`Signal`. The PLC (``edgewarden.simulators.plc``)
and the servers build their tag tables from a plant's :class:`PlantSpec`, and a future
Gymnasium env will wrap the same model, so a new plant only has to provide the spec,
an initial state, the right-hand side and the observation function.

Time is in seconds at this interface (``step(dt_s, action)``); a model may use other
units inside (the CSTR works per minute). Integration is classic RK4 on a fixed internal
step: ``step`` cuts ``dt`` into ``ceil(dt / integration_step_s)`` equal sub-steps (shorter
ones only where the model's ``_max_step`` says the state is stiff, e.g. a runaway
reaction), so a run is reproducible for a given seed and sequence of ``dt``. Optional
process noise is an Euler-Maruyama increment per sub-step, from the plant's own generator.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from edgewarden.simulators.plants.objective import Interlock, Objective


@dataclass(frozen=True)
class Signal:
    """One named plant signal in engineering units.

    ``low``/``high`` are the physical range (a measurement's EURange, an action's
    bounds); ``default`` is the nominal value (an action's nominal point, a target's
    initial setpoint, a disturbance's nominal value).
    """

    name: str
    units: str
    low: float
    high: float
    description: str = ""
    default: float = 0.0

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ValueError(f"signal {self.name!r}: low {self.low} must be < high {self.high}")


@dataclass(frozen=True)
class PlantSpec:
    """Everything the PLC, the servers and the docs need to know about a plant."""

    name: str
    description: str
    observations: tuple[Signal, ...]
    actions: tuple[Signal, ...]
    safe_action: tuple[float, ...]
    targets: tuple[Signal, ...] = ()  # operator setpoints served beside the plant (e.g. T_sp)
    disturbances: tuple[Signal, ...] = ()
    states: tuple[str, ...] = field(default=())  # names of the ODE states, for docs/debug
    objective: Objective = field(default_factory=Objective)  # limits and training reward
    interlocks: tuple[Interlock, ...] = ()  # the PLC's own interlocks

    def __post_init__(self) -> None:
        if len(self.safe_action) != len(self.actions):
            raise ValueError(f"plant {self.name!r}: safe_action needs one value per action")
        names = [s.name for s in self.observations + self.actions + self.targets]
        if len(set(names)) != len(names):
            raise ValueError(f"plant {self.name!r}: signal names must be unique: {names}")
        for sig, safe in zip(self.actions, self.safe_action, strict=True):
            if not sig.low <= safe <= sig.high:
                raise ValueError(f"plant {self.name!r}: safe {sig.name}={safe} outside bounds")
        obs = set(self.observation_names())
        tgt = {s.name for s in self.targets}
        for lim in self.objective.limits:
            if lim.name not in obs:
                raise ValueError(f"plant {self.name!r}: limit on unknown observation {lim.name!r}")
        acts = set(self.action_names())
        for ilk in self.interlocks:
            if ilk.signal not in obs | acts or any(a not in acts for a, _ in ilk.forces):
                raise ValueError(f"plant {self.name!r}: interlock {ilk.name!r} names unknown "
                                 "signals")
        for trk in self.objective.tracking:
            if trk.observation not in obs or trk.target not in tgt:
                raise ValueError(f"plant {self.name!r}: tracking {trk} names unknown signals")

    @property
    def action_low(self) -> np.ndarray:
        return np.array([s.low for s in self.actions], dtype=np.float64)

    @property
    def action_high(self) -> np.ndarray:
        return np.array([s.high for s in self.actions], dtype=np.float64)

    @property
    def nominal_action(self) -> np.ndarray:
        return np.array([s.default for s in self.actions], dtype=np.float64)

    @property
    def safe_action_array(self) -> np.ndarray:
        return np.array(self.safe_action, dtype=np.float64)

    def action_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.actions)

    def observation_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.observations)


class PlantModel(ABC):
    """Base of every plant: fixed-step RK4 integration, seeding, disturbances.

    Subclasses set the class attributes ``spec`` and ``integration_step_s`` and implement
    :meth:`_initial_state`, :meth:`_rhs` (derivative per **second**) and :meth:`_observe`.
    ``process_noise`` is one standard deviation per state in state units per sqrt(s)
    (a scalar applies to all states); zero (the default) makes the model exactly
    deterministic, non-zero makes it deterministic under the seed.
    """

    spec: PlantSpec
    integration_step_s: float = 0.5
    control_period_s: float = 1.0  # default step of the Gymnasium env
    horizon_s: float = 600.0  # default episode length of the Gymnasium env

    def __init__(self, seed: int | None = 0, process_noise: float | np.ndarray = 0.0) -> None:
        self._noise = np.broadcast_to(
            np.asarray(process_noise, dtype=np.float64), (len(self.spec.states),)
        ).copy()
        self._disturbances: dict[str, float] = {}
        self._seed = seed
        self._rng = np.random.default_rng(seed)
        self._x = np.zeros(len(self.spec.states))
        self._t = 0.0
        self.reset(seed)

    # ---- public interface -------------------------------------------------------------
    def reset(self, seed: int | None = None) -> None:
        """Back to the initial state and nominal disturbances; reseed when ``seed`` is given."""
        if seed is not None:
            self._seed = seed
        self._rng = np.random.default_rng(self._seed)
        self._disturbances = {d.name: float(d.default) for d in self.spec.disturbances}
        self._x = np.asarray(self._initial_state(self._rng), dtype=np.float64).copy()
        self._t = 0.0

    def step(self, dt: float, action: np.ndarray) -> None:
        """Advance ``dt`` seconds holding ``action`` (clipped to the action bounds)."""
        if dt < 0 or not math.isfinite(dt):
            raise ValueError(f"dt must be a finite non-negative number of seconds, got {dt!r}")
        u = np.asarray(action, dtype=np.float64).reshape(-1)
        if u.shape != (len(self.spec.actions),):
            raise ValueError(f"action must have {len(self.spec.actions)} values, got {u.shape}")
        if not np.all(np.isfinite(u)):
            raise ValueError(f"action must be finite, got {u!r}")
        if dt == 0:
            return
        u = np.clip(u, self.spec.action_low, self.spec.action_high)
        x = self._x
        d = self._disturbances
        noisy = bool(np.any(self._noise))
        left = dt
        while left > 1e-12:
            h = min(self.integration_step_s, self._max_step(x, u, d), left)
            # equal sub-steps of at most integration_step_s, shorter only where stiff
            h = left / math.ceil(left / h - 1e-9)
            k1 = self._rhs(x, u, d)
            k2 = self._rhs(x + 0.5 * h * k1, u, d)
            k3 = self._rhs(x + 0.5 * h * k2, u, d)
            k4 = self._rhs(x + h * k3, u, d)
            x = x + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
            if noisy:
                x = x + self._noise * math.sqrt(h) * self._rng.standard_normal(x.shape)
            x = self._project(x)
            left -= h
        self._x = x
        self._t += dt

    def observe(self) -> np.ndarray:
        """The observations, in the order of ``spec.observations``."""
        return np.asarray(self._observe(self._x), dtype=np.float64)

    def set_disturbance(self, name: str, value: float) -> None:
        if name not in self._disturbances:
            known = ", ".join(sorted(self._disturbances)) or "none"
            raise KeyError(f"plant {self.spec.name!r} has no disturbance {name!r} (known: {known})")
        if not math.isfinite(value):
            raise ValueError(f"disturbance {name!r} must be finite")
        self._disturbances[name] = float(value)

    @property
    def disturbances(self) -> Mapping[str, float]:
        return dict(self._disturbances)

    @property
    def state(self) -> np.ndarray:
        """A copy of the ODE state, in the order of ``spec.states``."""
        return self._x.copy()

    @state.setter
    def state(self, value: np.ndarray) -> None:
        x = np.asarray(value, dtype=np.float64).reshape(-1)
        if x.shape != self._x.shape:
            raise ValueError(f"state must have {self._x.size} values")
        self._x = x.copy()

    @property
    def time_s(self) -> float:
        """Simulated seconds since the last reset."""
        return self._t

    # ---- what a plant provides --------------------------------------------------------
    @abstractmethod
    def _initial_state(self, rng: np.random.Generator) -> np.ndarray: ...

    @abstractmethod
    def _rhs(self, x: np.ndarray, u: np.ndarray, d: Mapping[str, float]) -> np.ndarray:
        """dx/dt per second at state ``x``, clipped action ``u``, disturbances ``d``."""

    @abstractmethod
    def _observe(self, x: np.ndarray) -> np.ndarray: ...

    def _max_step(self, x: np.ndarray, u: np.ndarray, d: Mapping[str, float]) -> float:
        """Longest stable RK4 sub-step (s) at this state; override for stiff regions."""
        return math.inf

    def _project(self, x: np.ndarray) -> np.ndarray:
        """Keep the state physical after a sub-step (e.g. no negative concentration)."""
        return x
