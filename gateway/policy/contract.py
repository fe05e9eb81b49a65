"""The model contract: what an exported policy promises about the plant it was trained for.

The contract travels inside the ONNX file, as the metadata property
``edgewarden.contract`` holding one JSON object (see :meth:`PolicyContract.to_json`).
It names the observation and action tags in the order the graph expects them, their
engineering units, the action bounds the graph clips to, and where the model came from
(algorithm, dataset hash, training config). Normalisation is *not* in the contract: it is
baked into the graph, so a deployed model cannot be fed un-normalised inputs.

At load the gateway checks the contract against its own tag map with
:func:`check_against`; any difference refuses the model with one message that lists
every problem.

This module imports only the standard library, so both the gateway and training/ use it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import PolicyError

__all__ = [
    "CONTRACT_FORMAT_VERSION",
    "METADATA_KEY",
    "ObsStats",
    "PolicyContract",
    "check_against",
]

METADATA_KEY = "edgewarden.contract"
CONTRACT_FORMAT_VERSION = 1
_SUPPORTED_VERSIONS = frozenset({1})

_KEYS = (
    "format_version",
    "observation_tags",
    "observation_units",
    "action_tags",
    "action_units",
    "action_low",
    "action_high",
    "algorithm",
    "dataset_hash",
    "training_config",
    "input_name",
    "output_name",
    "obs_stats",
)
_OPTIONAL_KEYS = frozenset({"obs_stats"})
_STATS_KEYS = ("min", "max", "mean", "std")


def _bad(msg: str) -> PolicyError:
    return PolicyError(f"invalid policy contract: {msg}")


def _str_tuple(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise _bad(f"{name} must be a list of strings, got {type(value).__name__}")
    out = tuple(value)
    for i, v in enumerate(out):
        if not isinstance(v, str):
            raise _bad(f"{name}[{i}] must be a string, got {v!r}")
    return out


def _float_tuple(name: str, value: Any) -> tuple[float, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise _bad(f"{name} must be a list of numbers, got {type(value).__name__}")
    out = []
    for i, v in enumerate(value):
        # bool is an int subclass; a bound of `true` is a mistake, not 1.0.
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _bad(f"{name}[{i}] must be a number, got {v!r}")
        f = float(v)
        if not math.isfinite(f):
            raise _bad(f"{name}[{i}] must be finite, got {f!r}")
        out.append(f)
    return tuple(out)


@dataclass(frozen=True)
class ObsStats:
    """Per-feature statistics of the training observations (in engineering units).

    Used later by the out-of-distribution guard; each tuple has one entry per
    observation tag, in contract order.
    """

    min: tuple[float, ...]
    max: tuple[float, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        for k in _STATS_KEYS:
            object.__setattr__(self, k, _float_tuple(f"obs_stats.{k}", getattr(self, k)))
        n = len(self.min)
        for k in _STATS_KEYS:
            if len(getattr(self, k)) != n:
                raise _bad(f"obs_stats.{k} has {len(getattr(self, k))} entries, obs_stats.min has {n}")
        for i in range(n):
            if self.min[i] > self.max[i]:
                raise _bad(f"obs_stats min[{i}]={self.min[i]} > max[{i}]={self.max[i]}")
            if self.std[i] < 0:
                raise _bad(f"obs_stats std[{i}]={self.std[i]} is negative")

    def to_dict(self) -> dict[str, list[float]]:
        return {k: list(getattr(self, k)) for k in _STATS_KEYS}

    @classmethod
    def from_dict(cls, d: Any) -> ObsStats:
        if not isinstance(d, Mapping):
            raise _bad(f"obs_stats must be an object, got {type(d).__name__}")
        missing = [k for k in _STATS_KEYS if k not in d]
        extra = sorted(set(d) - set(_STATS_KEYS))
        if missing or extra:
            raise _bad(f"obs_stats keys: missing {missing}, unknown {extra}")
        return cls(**{k: d[k] for k in _STATS_KEYS})


@dataclass(frozen=True)
class PolicyContract:
    """What an exported policy expects and promises. Validated on construction.

    ``observation_*`` and ``action_*`` are in graph order: feature ``i`` of the input
    tensor is ``observation_tags[i]``. ``action_low``/``action_high`` are the bounds the
    graph clips its output to (engineering units).
    """

    observation_tags: tuple[str, ...]
    observation_units: tuple[str, ...]
    action_tags: tuple[str, ...]
    action_units: tuple[str, ...]
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    algorithm: str
    dataset_hash: str
    training_config: dict[str, Any] = field(default_factory=dict, hash=False)
    input_name: str = "obs"
    output_name: str = "action"
    obs_stats: ObsStats | None = None
    format_version: int = CONTRACT_FORMAT_VERSION

    def __post_init__(self) -> None:
        fv = self.format_version
        if isinstance(fv, bool) or not isinstance(fv, int):
            raise _bad(f"format_version must be an integer, got {fv!r}")
        if fv not in _SUPPORTED_VERSIONS:
            raise _bad(
                f"format_version {fv} is not supported by this gateway "
                f"(supported: {sorted(_SUPPORTED_VERSIONS)}); re-export the model "
                "with a matching edgewarden version or upgrade the gateway"
            )
        for name in ("observation_tags", "observation_units", "action_tags", "action_units"):
            object.__setattr__(self, name, _str_tuple(name, getattr(self, name)))
        for name in ("action_low", "action_high"):
            object.__setattr__(self, name, _float_tuple(name, getattr(self, name)))
        for name in ("algorithm", "dataset_hash", "input_name", "output_name"):
            if not isinstance(getattr(self, name), str):
                raise _bad(f"{name} must be a string, got {getattr(self, name)!r}")
        if not self.input_name or not self.output_name:
            raise _bad("input_name and output_name must not be empty")
        if not isinstance(self.training_config, Mapping):
            raise _bad(f"training_config must be an object, got {type(self.training_config).__name__}")
        try:  # must survive the JSON round trip unchanged in meaning
            json.dumps(self.training_config, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise _bad(f"training_config is not plain JSON: {e}") from None

        n_obs, n_act = len(self.observation_tags), len(self.action_tags)
        if n_obs == 0:
            raise _bad("observation_tags is empty")
        if n_act == 0:
            raise _bad("action_tags is empty")
        problems = []
        for name, n, ref in (
            ("observation_units", len(self.observation_units), ("observation_tags", n_obs)),
            ("action_units", len(self.action_units), ("action_tags", n_act)),
            ("action_low", len(self.action_low), ("action_tags", n_act)),
            ("action_high", len(self.action_high), ("action_tags", n_act)),
        ):
            if n != ref[1]:
                problems.append(f"{name} has {n} entries but {ref[0]} has {ref[1]}")
        for name, tags in (("observation_tags", self.observation_tags), ("action_tags", self.action_tags)):
            if any(not t for t in tags):
                problems.append(f"{name} contains an empty name")
            dup = sorted({t for t in tags if tags.count(t) > 1})
            if dup:
                problems.append(f"{name} repeats {dup}")
        if not problems:
            for i, (lo, hi) in enumerate(zip(self.action_low, self.action_high, strict=True)):
                if lo > hi:
                    problems.append(f"action {self.action_tags[i]!r}: low {lo} > high {hi}")
        if self.obs_stats is not None:
            if not isinstance(self.obs_stats, ObsStats):
                raise _bad("obs_stats must be an ObsStats")
            if len(self.obs_stats.min) != n_obs:
                problems.append(f"obs_stats has {len(self.obs_stats.min)} entries but observation_tags has {n_obs}")
        if problems:
            raise _bad("; ".join(problems))

    @property
    def n_obs(self) -> int:
        return len(self.observation_tags)

    @property
    def n_act(self) -> int:
        return len(self.action_tags)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "observation_tags": list(self.observation_tags),
            "observation_units": list(self.observation_units),
            "action_tags": list(self.action_tags),
            "action_units": list(self.action_units),
            "action_low": list(self.action_low),
            "action_high": list(self.action_high),
            "algorithm": self.algorithm,
            "dataset_hash": self.dataset_hash,
            "training_config": self.training_config,
            "input_name": self.input_name,
            "output_name": self.output_name,
            "obs_stats": None if self.obs_stats is None else self.obs_stats.to_dict(),
        }

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): equal contracts give equal strings."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> PolicyContract:
        """Parse and validate; raises :class:`PolicyError` naming the first problem found."""
        try:
            d = json.loads(text)
        except (ValueError, TypeError) as e:
            raise _bad(f"not valid JSON: {e}") from None
        if not isinstance(d, dict):
            raise _bad(f"expected a JSON object, got {type(d).__name__}")
        # The version first: a newer format may legitimately have other keys.
        if "format_version" not in d:
            raise _bad("format_version is missing")
        fv = d["format_version"]
        if isinstance(fv, bool) or not isinstance(fv, int) or fv not in _SUPPORTED_VERSIONS:
            raise _bad(
                f"format_version {fv!r} is not supported by this gateway "
                f"(supported: {sorted(_SUPPORTED_VERSIONS)}); re-export the model "
                "with a matching edgewarden version or upgrade the gateway"
            )
        missing = [k for k in _KEYS if k not in d and k not in _OPTIONAL_KEYS]
        unknown = sorted(set(d) - set(_KEYS))
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing keys {missing}")
            if unknown:
                parts.append(f"unknown keys {unknown}")
            raise _bad(", ".join(parts))
        stats = d.get("obs_stats")
        kwargs = {k: d[k] for k in _KEYS if k in d and k != "obs_stats"}
        return cls(**kwargs, obs_stats=None if stats is None else ObsStats.from_dict(stats))


def check_against(
    contract: PolicyContract,
    expected_obs: Sequence[tuple[str, str]],
    expected_act: Sequence[tuple[str, str, float, float]],
) -> None:
    """Check a model's contract against the gateway's tag map.

    ``expected_obs`` is ``[(tag, units), ...]`` in the order the gateway will feed them;
    ``expected_act`` is ``[(tag, units, low, high), ...]`` with the configured action
    bounds. The model's bounds must lie within the configured ones (a model may be
    stricter than the plant, never wider). Raises :class:`PolicyError` listing every
    mismatch in one message; returns ``None`` when the model fits.
    """
    problems: list[str] = []
    _compare_tags(
        "observation", contract.observation_tags, contract.observation_units,
        [(t, u) for t, u in expected_obs], problems,
    )
    _compare_tags(
        "action", contract.action_tags, contract.action_units,
        [(t, u) for t, u, _, _ in expected_act], problems,
    )
    configured = {t: (float(lo), float(hi)) for t, _, lo, hi in expected_act}
    for tag, lo, hi in zip(contract.action_tags, contract.action_low, contract.action_high, strict=True):
        if tag not in configured:
            continue
        clo, chi = configured[tag]
        if lo < clo:
            problems.append(f"action {tag!r}: model low bound {lo:g} is below the configured low {clo:g}")
        if hi > chi:
            problems.append(f"action {tag!r}: model high bound {hi:g} is above the configured high {chi:g}")
    if problems:
        raise PolicyError(
            f"model does not fit this plant ({len(problems)} problem{'s' if len(problems) > 1 else ''}): "
            + "; ".join(problems)
        )


def _compare_tags(
    kind: str,
    model_tags: tuple[str, ...],
    model_units: tuple[str, ...],
    expected: list[tuple[str, str]],
    problems: list[str],
) -> None:
    exp_tags = [t for t, _ in expected]
    exp_units = dict(expected)
    if list(model_tags) != exp_tags:
        missing = [t for t in exp_tags if t not in model_tags]
        extra = [t for t in model_tags if t not in exp_units]
        if missing:
            problems.append(f"{kind} tags configured but not in the model: {missing}")
        if extra:
            problems.append(f"{kind} tags in the model but not configured: {extra}")
        if len(model_tags) != len(exp_tags):
            problems.append(f"model has {len(model_tags)} {kind} tags, configuration has {len(exp_tags)}")
        elif not missing and not extra:
            problems.append(
                f"{kind} tag order differs: model {list(model_tags)}, configuration {exp_tags}"
            )
    for tag, units in zip(model_tags, model_units, strict=True):
        if tag in exp_units and units.strip() != exp_units[tag].strip():
            problems.append(f"{kind} {tag!r}: model units {units!r}, configured units {exp_units[tag]!r}")
