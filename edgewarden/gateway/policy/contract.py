"""The model contract: what an exported policy promises about the plant it was trained for.

The contract travels inside the ONNX file, as the metadata property
``edgewarden.contract`` holding one JSON object (see :meth:`PolicyContract.to_json`).
It names the observation and action tags in the order the graph expects them, their
engineering units, the action bounds the graph clips to, and where the model came from
(algorithm, dataset hash, training config). Normalisation is *not* in the contract: it is
baked into the graph, so a deployed model cannot be fed un-normalised inputs.

The schema is a pydantic model (unknown keys, non-finite numbers, booleans or strings
where numbers belong are refused); a contract that does not validate raises
:class:`PolicyError` naming the key. At load the gateway checks the contract against its
own tag map with :func:`check_against`; any difference refuses the model with one message
that lists every problem.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, StrictFloat, StrictInt, StrictStr, ValidationError, field_validator, \
    model_validator

from edgewarden.gateway.errors import PolicyError

__all__ = [
    "CONTRACT_FORMAT_VERSION",
    "METADATA_KEY",
    "ObsStats",
    "PolicyContract",
    "Uncertainty",
    "check_against",
]

METADATA_KEY = "edgewarden.contract"
CONTRACT_FORMAT_VERSION = 1
_SUPPORTED_VERSIONS = frozenset({1})

Numbers = tuple[StrictFloat, ...]  # ints become floats; bools, strings and non-finite numbers are refused
Names = tuple[StrictStr, ...]


def _bad(msg: str) -> PolicyError:
    return PolicyError(f"invalid policy contract: {msg}")


def _where(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _refusal(exc: ValidationError) -> PolicyError:
    """One message for every problem pydantic found; an unsupported format version first
    (a newer format may legitimately have other keys)."""
    errors = exc.errors()
    version = [e for e in errors if e["loc"][:1] == ("format_version",) and e["type"] != "missing"]
    if version:
        errors = version
    missing = [_where(e["loc"]) for e in errors if e["type"] == "missing"]
    unknown = sorted(_where(e["loc"]) for e in errors if e["type"] == "extra_forbidden")
    parts = [f"missing keys {missing}"] if missing else []
    parts += [f"unknown keys {unknown}"] if unknown else []
    for e in errors:
        if e["type"] in ("missing", "extra_forbidden"):
            continue
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(msg if not e["loc"] else f"{_where(e['loc'])}: {msg}")
    return _bad("; ".join(parts))


def _strict_json(key: str, value: dict[str, Any]) -> dict[str, Any]:
    """``value`` as it is, if it survives the contract's strict JSON round trip unchanged in
    meaning (no NaN or infinity, nothing JSON cannot hold); else a ValueError naming ``key``."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{key} is not plain JSON: {e}") from None
    return value


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _refusal(exc) from None


class ObsStats(_Schema):
    """Per-feature statistics of the training observations (in engineering units), one
    entry per observation tag in contract order; the out-of-distribution guard uses them."""

    min: Numbers
    max: Numbers
    mean: Numbers
    std: Numbers

    @model_validator(mode="after")
    def _consistent(self) -> ObsStats:
        n = len(self.min)
        for key in ("max", "mean", "std"):
            if len(getattr(self, key)) != n:
                raise ValueError(f"obs_stats.{key} has {len(getattr(self, key))} entries, obs_stats.min has {n}")
        for i in range(n):
            if self.min[i] > self.max[i]:
                raise ValueError(f"obs_stats min[{i}]={self.min[i]} > max[{i}]={self.max[i]}")
            if self.std[i] < 0:
                raise ValueError(f"obs_stats std[{i}]={self.std[i]} is negative")
        return self


class Uncertainty(_Schema):
    """A second graph output, ``[batch, 1]``: how unfamiliar the policy finds this input.

    ``method`` names the figure: ``critic_disagreement`` is the spread (max − min) of the
    critic ensemble's Q(s, π(s)) over its heads, divided in the graph by ``scale``, the
    99.9th percentile of that spread over the training dataset's states; so 1.0 is the
    data's own 99.9th percentile. Above ``threshold`` the input counts as out of
    distribution. ``calibration`` holds the raw figures it was calibrated from."""

    output_name: StrictStr = "uncertainty"
    method: StrictStr
    scale: StrictFloat
    threshold: StrictFloat
    calibration: dict[str, Any] = {}

    @field_validator("calibration")
    @classmethod
    def _plain_json(cls, calibration: dict[str, Any]) -> dict[str, Any]:
        return _strict_json("uncertainty.calibration", calibration)

    @model_validator(mode="after")
    def _positive(self) -> Uncertainty:
        if not self.output_name:
            raise ValueError("uncertainty.output_name must not be empty")
        for key in ("scale", "threshold"):
            if not getattr(self, key) > 0:
                raise ValueError(f"uncertainty.{key} must be > 0, got {getattr(self, key)}")
        return self


class PolicyContract(_Schema):
    """What an exported policy expects and promises. Validated on construction.

    ``observation_*`` and ``action_*`` are in graph order: feature ``i`` of the input
    tensor is ``observation_tags[i]``. ``action_low``/``action_high`` are the bounds the
    graph clips its output to (engineering units).
    """

    format_version: StrictInt = CONTRACT_FORMAT_VERSION
    observation_tags: Names
    observation_units: Names
    action_tags: Names
    action_units: Names
    action_low: Numbers
    action_high: Numbers
    algorithm: StrictStr
    dataset_hash: StrictStr
    training_config: dict[str, Any] = {}
    input_name: StrictStr = "obs"
    output_name: StrictStr = "action"
    obs_stats: ObsStats | None = None
    uncertainty: Uncertainty | None = None  # an uncertainty output, where the export has one

    @field_validator("format_version")
    @classmethod
    def _supported(cls, fv: int) -> int:
        if fv not in _SUPPORTED_VERSIONS:
            raise ValueError(f"format_version {fv} is not supported by this gateway (supported: "
                             f"{sorted(_SUPPORTED_VERSIONS)}); re-export the model with a matching edgewarden "
                             "version or upgrade the gateway")
        return fv

    @field_validator("training_config")
    @classmethod
    def _plain_json(cls, config: dict[str, Any]) -> dict[str, Any]:
        return _strict_json("training_config", config)

    @model_validator(mode="after")
    def _consistent(self) -> PolicyContract:
        n_obs, n_act = len(self.observation_tags), len(self.action_tags)
        if not self.input_name or not self.output_name:
            raise ValueError("input_name and output_name must not be empty")
        if self.uncertainty is not None and self.uncertainty.output_name in (self.input_name, self.output_name):
            raise ValueError(f"uncertainty.output_name {self.uncertainty.output_name!r} is already the graph's "
                             "input or action output")
        if n_obs == 0:
            raise ValueError("observation_tags is empty")
        if n_act == 0:
            raise ValueError("action_tags is empty")
        problems = [f"{name} has {n} entries but {ref} has {m}" for name, n, ref, m in (
            ("observation_units", len(self.observation_units), "observation_tags", n_obs),
            ("action_units", len(self.action_units), "action_tags", n_act),
            ("action_low", len(self.action_low), "action_tags", n_act),
            ("action_high", len(self.action_high), "action_tags", n_act)) if n != m]
        for name, tags in (("observation_tags", self.observation_tags), ("action_tags", self.action_tags)):
            if any(not t for t in tags):
                problems.append(f"{name} contains an empty name")
            dup = sorted({t for t in tags if tags.count(t) > 1})
            if dup:
                problems.append(f"{name} repeats {dup}")
        if not problems:
            problems += [f"action {self.action_tags[i]!r}: low {lo} > high {hi}"
                         for i, (lo, hi) in enumerate(zip(self.action_low, self.action_high, strict=True)) if lo > hi]
        if self.obs_stats is not None and len(self.obs_stats.min) != n_obs:
            problems.append(f"obs_stats has {len(self.obs_stats.min)} entries but observation_tags has {n_obs}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def n_obs(self) -> int:
        return len(self.observation_tags)

    @property
    def n_act(self) -> int:
        return len(self.action_tags)

    def replaced(self, **changes: Any) -> PolicyContract:
        """A copy with ``changes``, validated like any new contract."""
        return type(self)(**{**dict(self), **changes})

    def to_dict(self) -> dict[str, Any]:
        # no "uncertainty" key when there is none: a model without one keeps its bytes
        return self.model_dump(mode="json", exclude={"uncertainty"} if self.uncertainty is None else None)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): equal contracts give equal strings."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> PolicyContract:
        """Parse and validate; raises :class:`PolicyError` naming what is wrong. The format
        version is required (a contract without one predates the format)."""
        try:
            d = json.loads(text)
        except (ValueError, TypeError) as e:
            raise _bad(f"not valid JSON: {e}") from None
        if not isinstance(d, dict):
            raise _bad(f"expected a JSON object, got {type(d).__name__}")
        if "format_version" not in d:
            raise _bad("missing keys ['format_version']")
        return cls(**d)


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
