"""Offline RL algorithms, one readable module each: BC, TD3+BC, IQL, CQL.

``ALGOS`` maps the CLI name to ``(Algorithm class, Config class)``; every algorithm
implements :class:`edgewarden.training.algos.base.Algorithm`: ``update(batch) -> dict[str, Tensor]`` (detached 0-d losses),
an ``actor`` whose ``deterministic(obs)`` is what gets exported, and state dicts for
checkpoints.
"""

from __future__ import annotations

from edgewarden.training.algos.base import Algorithm
from edgewarden.training.algos.bc import BC, BCConfig
from edgewarden.training.algos.cql import CQL, CQLConfig
from edgewarden.training.algos.iql import IQL, IQLConfig
from edgewarden.training.algos.td3bc import TD3BC, TD3BCConfig

__all__ = ["ALGOS", "Algorithm", "make_algorithm", "make_config"]

ALGOS: dict[str, tuple[type[Algorithm], type]] = {
    "bc": (BC, BCConfig),
    "td3bc": (TD3BC, TD3BCConfig),
    "iql": (IQL, IQLConfig),
    "cql": (CQL, CQLConfig),
}


def make_config(name: str, overrides: dict | None = None):  # noqa: ANN201 (the algorithm's config class)
    """The algorithm's config with ``overrides`` applied, every value checked; a ConfigError
    names each bad key, why, and the valid ones."""
    from pydantic import ValidationError

    from edgewarden.gateway.errors import ConfigError
    from edgewarden.training.algos.params import config_problems

    try:
        cfg_cls = ALGOS[name][1]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r} (known: {', '.join(ALGOS)})") from None
    try:
        return cfg_cls(**(overrides or {}))
    except ValidationError as exc:
        raise ConfigError(config_problems(name, cfg_cls, exc)) from None


def make_algorithm(name: str, n_obs: int, n_act: int, obs_mean, obs_std, *, device, seed: int,
                   overrides: dict | None = None) -> Algorithm:
    cfg = make_config(name, overrides)
    return ALGOS[name][0](cfg, n_obs, n_act, obs_mean, obs_std, device=device, seed=seed)
