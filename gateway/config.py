"""Gateway configuration: one TOML file, ``EDGEWARDEN_*`` environment overrides.

The file is parsed with tomllib, then validated by pydantic-settings models in which
every section forbids unknown keys. Environment variables override the file:
``EDGEWARDEN_GATEWAY__CYCLE_HZ=50`` sets ``[gateway] cycle_hz``. After the schema, the
cross-references are checked (tags named by the policy, the limits and the actions exist,
action tags are writable, safe values sit inside their bounds...).

Every problem is reported at once, each as ``FILE: key.path: what was expected``, in a
single ``ConfigError``; ``edgewarden config check FILE`` prints them and exits 78.
Relative paths in the file are relative to the file's directory.
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gateway.errors import ConfigError

ENV_PREFIX = "EDGEWARDEN_"

DataType = Literal["double", "float", "bool", "int16", "uint16", "int32", "uint32"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Range = tuple[float, float]


def _check_range(value: Range | None, what: str) -> Range | None:
    if value is not None:
        lo, hi = value
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
            raise ValueError(f"{what} must be two finite numbers [low, high] with low <= high, got {list(value)}")
    return value


class GatewaySection(_Section):
    name: str = "edgewarden"
    cycle_hz: float = Field(10.0, gt=0, le=2000, description="control cycle rate")
    auto_start: bool = Field(False, description="go from READY to AUTO without an operator start")
    max_consecutive_overruns: int = Field(5, ge=1, description="deadline overruns in a row that trip the e-stop")
    comms_timeout_ms: float = Field(1000.0, gt=0, description="comms loss longer than this trips the e-stop")
    busy_wait_us: float = Field(0.0, ge=0, le=5000, description="spin this long before each deadline")


class ConnectionSpec(_Section):
    type: Literal["opcua"] = "opcua"
    url: str = Field(pattern=r"^opc\.tcp://")
    timeout_s: float = Field(2.0, gt=0, le=60)
    reconnect_min_s: float = Field(0.2, gt=0)
    reconnect_max_s: float = Field(10.0, gt=0)


class TagSpec(_Section):
    """One tag, named once; everything downstream uses the tag name and engineering units."""

    connection: str
    node: str = Field(min_length=1, description="OPC UA NodeId string, e.g. ns=2;s=cstr.T")
    datatype: DataType = "double"
    units: str = ""
    range: Range | None = Field(None, description="valid range in engineering units; outside = bad data")
    scale: float = 1.0
    offset: float = 0.0
    writable: bool = False
    stale_ms: float | None = Field(None, gt=0, description="source timestamp older than this = stale")
    description: str = ""

    @model_validator(mode="after")
    def _valid(self) -> TagSpec:
        _check_range(self.range, "range")
        if self.scale == 0 or not math.isfinite(self.scale):
            raise ValueError("scale must be finite and non-zero")
        return self


class PolicySection(_Section):
    path: Path
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="pin: refuse any other model")
    observations: list[str] = Field(min_length=1)
    actions: list[str] = Field(min_length=1)


class LimitSpec(_Section):
    hard: Range | None = Field(None, description="outside trips the e-stop")
    soft: Range | None = Field(None, description="outside raises a counted alarm")

    @model_validator(mode="after")
    def _valid(self) -> LimitSpec:
        _check_range(self.hard, "hard")
        _check_range(self.soft, "soft")
        return self


class ActionSpec(_Section):
    min: float
    max: float
    max_rate: float | None = Field(None, gt=0, description="largest change per second")
    safe: float = Field(description="value written on e-stop")

    @model_validator(mode="after")
    def _valid(self) -> ActionSpec:
        _check_range((self.min, self.max), "[min, max]")
        if not self.min <= self.safe <= self.max:
            raise ValueError(f"safe value {self.safe} lies outside [min, max] = [{self.min}, {self.max}]")
        return self


class SafetySection(_Section):
    heartbeat_tag: str = Field(description="writable alive counter the PLC watches")
    estop_input: str | None = Field(None, description="boolean tag: true = PLC e-stop active (trips)")
    limits: dict[str, LimitSpec] = Field(default_factory=dict)
    actions: dict[str, ActionSpec] = Field(default_factory=dict)


class AuditSection(_Section):
    dir: Path = Path("audit")
    commit_interval_ms: float = Field(10.0, gt=0, le=1000)
    segment_mb: float = Field(64.0, gt=0)


class MetricsSection(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9108, ge=0, le=65535, description="0 = any free port")


class ControlSection(_Section):
    socket: Path = Path("control.sock")


class LoggingSection(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["console", "json"] = "console"


class Settings(BaseSettings):
    """The whole configuration. Build it with :func:`load_config`, not directly."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    gateway: GatewaySection = GatewaySection()
    connections: dict[str, ConnectionSpec]
    tags: dict[str, TagSpec]
    policy: PolicySection
    safety: SafetySection
    audit: AuditSection = AuditSection()
    metrics: MetricsSection = MetricsSection()
    control: ControlSection = ControlSection()
    logging: LoggingSection = LoggingSection()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file (which arrives as init kwargs).
        return (env_settings, init_settings)


class LoadedConfig(BaseModel):
    """A validated configuration plus where it came from."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    settings: Settings
    path: Path
    sha256: str


def _fmt_loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _fmt_input(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _schema_problems(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        loc = _fmt_loc(err["loc"])
        if err["type"] == "extra_forbidden":
            out.append(f"{loc}: unknown key (not part of the configuration schema)")
        elif err["type"] == "missing":
            out.append(f"{loc}: required key is missing")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            out.append(f"{loc}: {msg} (got {_fmt_input(err.get('input'))})")
    return out


def _cross_problems(s: Settings) -> list[str]:
    """References between sections. Each problem names its key path."""
    out: list[str] = []
    tags = s.tags
    for name, tag in tags.items():
        if tag.connection not in s.connections:
            out.append(f"tags.{name}.connection: no connection named {tag.connection!r} "
                       f"(known: {sorted(s.connections)})")

    def need_tag(path: str, name: str, *, writable: bool = False) -> TagSpec | None:
        tag = tags.get(name)
        if tag is None:
            out.append(f"{path}: no tag named {name!r} in [tags]")
        elif writable and not tag.writable:
            out.append(f"{path}: tag {name!r} must be writable (set tags.{name}.writable = true)")
        return tag

    for i, name in enumerate(s.policy.observations):
        need_tag(f"policy.observations[{i}]", name)
    for i, name in enumerate(s.policy.actions):
        need_tag(f"policy.actions[{i}]", name, writable=True)
        if name not in s.safety.actions:
            out.append(f"policy.actions[{i}]: action {name!r} has no [safety.actions.{name}] "
                       "(bounds, rate and safe value are required for every action)")
    if len(set(s.policy.observations)) != len(s.policy.observations):
        out.append("policy.observations: a tag is listed twice")
    if len(set(s.policy.actions)) != len(s.policy.actions):
        out.append("policy.actions: a tag is listed twice")
    hb = need_tag("safety.heartbeat_tag", s.safety.heartbeat_tag, writable=True)
    if hb is not None and hb.datatype in ("double", "float", "bool"):
        out.append(f"safety.heartbeat_tag: tag {s.safety.heartbeat_tag!r} must have an integer datatype "
                   f"(got {hb.datatype!r})")
    if s.safety.estop_input is not None:
        need_tag("safety.estop_input", s.safety.estop_input)
    for name in s.safety.limits:
        need_tag(f"safety.limits.{name}", name)
    for name, act in s.safety.actions.items():
        tag = need_tag(f"safety.actions.{name}", name, writable=True)
        if tag is not None and tag.range is not None:
            lo, hi = tag.range
            if act.min < lo or act.max > hi:
                out.append(f"safety.actions.{name}: bounds [{act.min}, {act.max}] exceed the tag's "
                           f"valid range [{lo}, {hi}]")
        if name not in s.policy.actions:
            out.append(f"safety.actions.{name}: not one of policy.actions {s.policy.actions}")
    return out


def _resolve_paths(s: Settings, base: Path) -> Settings:
    def fix(p: Path) -> Path:
        return p if p.is_absolute() else (base / p).resolve()

    return s.model_copy(
        update={
            "policy": s.policy.model_copy(update={"path": fix(s.policy.path)}),
            "audit": s.audit.model_copy(update={"dir": fix(s.audit.dir)}),
            "control": s.control.model_copy(update={"socket": fix(s.control.socket)}),
        }
    )


def load_config(path: Path | str) -> LoadedConfig:
    """Read, validate and cross-check a config file; raise ConfigError listing every problem."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration file: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        problems = _schema_problems(exc)
    else:
        problems = _cross_problems(settings)
    if problems:
        lines = "\n".join(f"  {path}: {p}" for p in problems)
        noun = "problem" if len(problems) == 1 else "problems"
        raise ConfigError(f"invalid configuration, {len(problems)} {noun}:\n{lines}")
    return LoadedConfig(
        settings=_resolve_paths(settings, path.resolve().parent),
        path=path,
        sha256=hashlib.sha256(raw).hexdigest(),
    )
