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
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from edgewarden.gateway.config_checks import cross_problems
from edgewarden.gateway.config_env import ENV_PREFIX, env_problems, env_variables, from_env
from edgewarden.gateway.configbase import DataType, FilePath, Flag, Range, Section, check_range
from edgewarden.gateway.errors import ConfigError
from edgewarden.gateway.io.modbus.connection import MODBUS_REGISTERS, ModbusConnection, ModbusTable
from edgewarden.gateway.io.opcua.connection import OpcUaConnection, check_node_id
from edgewarden.gateway.io.protocols import DEFAULT_TYPE, PROTOCOLS
from edgewarden.gateway.readfile import read_regular, read_text

__all__ = ["MODBUS_REGISTERS", "ConnectionSpec", "DataType", "LoadedConfig", "ModbusConnection", "OpcUaConnection",
           "Settings", "TagSpec", "load_config"]


class GatewaySection(Section):
    name: str = "edgewarden"
    cycle_hz: float = Field(10.0, gt=0, le=2000, description="control cycle rate")
    auto_start: Flag = Field(False, description="go from READY to AUTO without an operator start")
    max_consecutive_overruns: int = Field(5, ge=1, le=1_000_000, description="deadline overruns in a row that trip the e-stop")
    comms_timeout_ms: float = Field(1000.0, gt=0, le=60_000, description="comms loss longer than this trips the e-stop "
                                    "(within this plus one cycle, whatever a request timeout says)")
    max_data_age_ms: float | None = Field(None, gt=0, le=60_000, description="a monitored value received longer ago "
                                          "than this holds the cycle (then trips after comms_timeout_ms); "
                                          "default: half of comms_timeout_ms, at least three cycles; a tag's "
                                          "stale_ms overrides it")
    busy_wait_us: float = Field(0.0, ge=0, le=5000, description="wait out this last stretch before each "
                                "deadline precisely (nanosleep, then a short spin) instead of on the event "
                                "loop's millisecond timer; 0 = the event loop only")
    cpu_affinity: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list, description="pin the daemon to these CPUs "
                                    "(sched_setaffinity); empty = any CPU")
    realtime_priority: int | None = Field(None, ge=1, le=99, description="SCHED_FIFO at this priority; "
                                          "refuses to start where not permitted")
    event_loop: Literal["asyncio", "uvloop"] = Field("asyncio", description="uvloop needs the "
                                                     "edgewarden[uvloop] extra")
    timing_trace: FilePath | None = Field(None, description="save every cycle's lateness and stage times "
                                      "here (.npy) when the daemon stops (benchmarks)")
    write_ack: Literal["in_cycle", "next_cycle"] = Field("in_cycle", description="next_cycle: send the "
                                                         "outputs and collect the device's acknowledgement "
                                                         "while the cycle sleeps (a failed write counts one "
                                                         "cycle later); the e-stop's safe write always waits")
    gc: Literal["python", "between_cycles"] = Field("between_cycles", description="freeze what start-up "
                                                    "allocated and run the garbage collector after a cycle's "
                                                    "work, never inside a cycle; python: CPython's own timing")
    timing_trace_cycles: int = Field(1 << 16, ge=1, le=1 << 24, description="rows kept in the trace ring")
    on_stop: Literal["safe_outputs", "plc"] = Field("safe_outputs", description="on SIGTERM, if writing: "
                                                    "write the safe outputs once, or leave the outputs to "
                                                    "the PLC (its dead-man timer takes over either way)")

    @property
    def data_age_limit_ms(self) -> float:
        """``max_data_age_ms``, or its default: half of ``comms_timeout_ms``, at least three
        cycles (and never more than ``comms_timeout_ms``)."""
        if self.max_data_age_ms is not None:
            return self.max_data_age_ms
        return min(self.comms_timeout_ms, max(self.comms_timeout_ms / 2.0, 3000.0 / self.cycle_hz))


def _connection_type(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("type", DEFAULT_TYPE))
    return str(getattr(value, "type", DEFAULT_TYPE))


# the union of every protocol's connection model, told apart by ``type``
ConnectionSpec = Annotated[
    Union[tuple(Annotated[p.connection, Tag(t)] for t, p in PROTOCOLS.items())],  # noqa: UP007 (built from the table)
    Discriminator(_connection_type),
]


class TagSpec(Section):
    """One tag, named once; everything downstream uses the tag name and engineering units.
    The name is ASCII letters, digits and _ (not starting with a digit), unique regardless
    of case; the plant's own name goes in ``description``.

    Source: ``node`` for an OPC UA connection; ``table``/``address`` (and ``unit``,
    ``word_order``, ``byte_order``) for a Modbus connection.
    """

    connection: str
    node: str | None = Field(None, min_length=1, description="OPC UA NodeId string, e.g. ns=2;s=cstr.T")
    unit: int = Field(1, ge=0, le=255, description="Modbus device (unit) id")
    table: ModbusTable | None = Field(None, description="Modbus table")
    address: int | None = Field(None, ge=0, le=65535, description="Modbus protocol (0-based) address")
    word_order: Literal["big", "little"] = Field("big", description="big = high word at the lower address")
    byte_order: Literal["big", "little"] = Field("big", description="byte order inside each register")
    datatype: DataType = Field("double", description="the value's type on the wire")
    units: str = Field("", description="engineering units, shown and exported")
    range: Range | None = Field(None, description="valid range in engineering units; outside = bad data")
    scale: float = Field(1.0, description="engineering value = raw * scale + offset")
    offset: float = 0.0
    writable: Flag = Field(False, description="the gateway may write it (actions, heartbeat)")
    stale_ms: float | None = Field(None, gt=0, le=600_000, description="no sample received from the link for this long = "
                                   "stale (HOLD); default: [gateway] max_data_age_ms")
    freeze_s: float | None = Field(None, gt=0, le=86_400, description="value unchanged for this long = frozen sensor "
                                   "(HOLD); only for tags whose process always moves")
    description: str = ""

    @field_validator("node")
    @classmethod
    def _node_id(cls, node: str | None) -> str | None:
        if node is not None:
            check_node_id(node)
        return node

    @model_validator(mode="after")
    def _valid(self) -> TagSpec:
        check_range(self.range, "range")
        if self.scale == 0 or not math.isfinite(self.scale):
            raise ValueError("scale must be finite and non-zero")
        if self.node is None and self.address is None:
            raise ValueError("a tag needs a source: node (OPC UA) or table and address (Modbus)")
        if self.node is not None and (self.address is not None or self.table is not None):
            raise ValueError("give either node (OPC UA) or table/address (Modbus), not both")
        if self.address is not None and self.table is None:
            raise ValueError("a Modbus tag needs table (holding, input, coil or discrete)")
        if self.table is not None and self.address is None:
            raise ValueError("a Modbus tag needs address")
        if self.table in ("coil", "discrete") and self.datatype != "bool":
            raise ValueError(f"a {self.table} tag has datatype bool (got {self.datatype!r})")
        return self


class PidSpec(Section):
    """u = bias + kp·e + ki·∫e dt + kd·de/dt with e = setpoint − pv (negative kp: reverse acting)."""

    pv: str = Field(description="measured tag")
    setpoint: str | float = Field(description="setpoint tag, or a constant")
    kp: float
    ki: float = 0.0
    kd: float = 0.0
    bias: float = 0.0


class ExcitationSection(Section):
    """``[policy.excitation]`` (edgewarden/gateway/policy/excitation.py): the limits of an
    operator's test signal on the running controller's output."""

    max_fraction: float = Field(0.1, gt=0, le=0.5, description="the largest amplitude an operator may ask for, as a "
                                "fraction of each action's span")
    max_duration_s: float = Field(3600.0, gt=0, le=7 * 86_400, description="the longest excitation an operator may "
                                  "ask for")
    min_hold_s: float = Field(1.0, ge=0.1, le=3600, description="the shortest time a level is held (faster than "
                              "the plant can answer teaches nothing)")


class PolicySection(Section):
    kind: Literal["onnx", "pid", "hold", "monitor"] = Field(
        "onnx", description="what proposes the actions: an ONNX model (path); PID loops (pid); the last applied "
        "values (hold); or nothing at all: monitor reads, checks and audits but writes nothing, not even the "
        "heartbeat, and never starts (commissioning beside a running plant)")
    path: FilePath | None = Field(None, description="kind = onnx: the model (its contract is in its metadata; "
                                  "a manifest FILE.json beside it, when present, must name its SHA-256)")
    pid: dict[str, PidSpec] = Field(default_factory=dict, description="kind = pid: a loop per action (an action "
                                    "without one holds); its pv and setpoint tags must be policy observations")
    max_model_mb: float = Field(16.0, gt=0, le=2048, description="refuse larger models: loading one at run "
                                "time delays the running cycle, by tens of ms for tens of MiB (docs/models.md)")
    load_timeout_s: float = Field(30.0, gt=0, le=3600, description="a model load, shadow or file drop whose "
                                  "validation (warm-up included) takes longer is refused and its warm-up stopped; "
                                  "the running model stays")
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="pin: refuse any other model")
    pubkey: FilePath | None = Field(None, description="Ed25519 public key (PEM): every model needs a valid "
                                "detached signature FILE.sig made with its private key")
    observations: list[str] = Field(min_length=1, description="tags fed to the policy, in its input order")
    actions: list[str] = Field(min_length=1, description="tags it writes, in its output order")
    watch: Flag = Field(False, description="load the model file again when it changes (file drop)")
    shadow_tolerance: dict[str, float] = Field(default_factory=dict,
                                               description="per action; default 5 % of its span")
    promote_after_s: float = Field(60.0, ge=0, le=86_400, description="shadow agreement needed before promote")
    promote_min_transients: int = Field(1, ge=0, le=10_000, description="transients (the incumbent's action moving "
                                        "more than 5 % of its span within a second: a setpoint step, a disturbance) "
                                        "the shadow must have seen before promote: steady-state agreement alone is "
                                        "no evidence")
    promote_requires_estimate: Flag = Field(True, description="promote only a model whose manifest holds an "
                                            "off-policy estimate on this plant's history (train report --dataset) "
                                            "that shows it better than the running controller")
    auto_promote: Flag = Field(False, description="promote a shadow model as soon as it qualifies")
    rollback_window_s: float = Field(300.0, ge=0, le=86_400, description="a new model that faults or falls back "
                                     "within this time after its swap is rolled back")
    excitation: ExcitationSection = ExcitationSection()

    @model_validator(mode="after")
    def _kind_needs(self) -> PolicySection:
        if self.kind == "onnx" and self.path is None:
            raise ValueError('path: kind = "onnx" (the default) runs a model file: name it, or choose '
                             'kind = "pid", "hold" or "monitor", which run without one')
        if self.kind != "onnx":  # pubkey stays allowed: models loaded or shadowed at run time need it
            named = [k for k in ("path", "sha256") if getattr(self, k) is not None]
            if named or self.watch:
                raise ValueError(f"{(named or ['watch'])[0]}: kind = {self.kind!r} runs no model file "
                                 '(set kind = "onnx" to run one)')
        if self.kind == "pid" and not self.pid:
            raise ValueError('pid: kind = "pid" needs at least one loop: [policy.pid.ACTION] with pv, setpoint '
                             "and kp")
        if self.kind != "pid" and self.pid:
            raise ValueError(f'pid: loops run only with kind = "pid" (this policy is {self.kind!r})')
        return self


class LimitSpec(Section):
    hard: Range | None = Field(None, description="outside trips the e-stop")
    soft: Range | None = Field(None, description="outside raises a counted alarm")
    max_rate: float | None = Field(None, gt=0, description="largest plausible change per second; faster trips")

    @model_validator(mode="after")
    def _valid(self) -> LimitSpec:
        check_range(self.hard, "hard")
        check_range(self.soft, "soft")
        if self.hard is not None and self.soft is not None and not (
                self.hard[0] <= self.soft[0] and self.soft[1] <= self.hard[1]):
            raise ValueError(f"soft {list(self.soft)} must lie within hard {list(self.hard)}: a soft alarm "
                             "comes before the trip, never after it")
        return self


class ActionSpec(Section):
    min: float
    max: float
    max_rate: float | None = Field(None, gt=0, description="largest change per second")
    safe: float = Field(description="value written on e-stop")
    applied: str | None = Field(None, description="tag reading the output the PLC really applies "
                                "(tracked in MANUAL for a bumpless hand-back); default: the action tag")
    applied_tolerance: float | None = Field(None, gt=0, description="the applied value may differ from the "
                                            "written setpoint by this much (after applied_settle_s) before "
                                            "it is an alarm; default 5 % of [min, max]")

    @model_validator(mode="after")
    def _valid(self) -> ActionSpec:
        check_range((self.min, self.max), "[min, max]")
        if not self.min <= self.safe <= self.max:
            raise ValueError(f"safe value {self.safe} lies outside [min, max] = [{self.min}, {self.max}]")
        return self


class InterlockSpec(Section):
    """While ``when`` holds, ``then`` restricts an action (see edgewarden/gateway/safety/expr.py)."""

    when: str = Field(description='e.g. "T >= 380 and CA > 0.8"')
    then: str = Field(description='e.g. "feed_flow_sp <= 20"')

    @model_validator(mode="after")
    def _valid(self) -> InterlockSpec:
        from edgewarden.gateway.safety.expr import parse_condition, parse_restriction

        parse_condition(self.when)
        parse_restriction(self.then)
        return self


class FallbackSection(Section):
    controller: Literal["hold", "pid"] = Field("hold", description="hold the last safe action, or PID")
    pid: dict[str, PidSpec] = Field(default_factory=dict, description="per action (pid controller)")
    max_interventions: int = Field(20, ge=1, le=100_000, description="cycles whose proposal the shield had to clip "
                                   "to bounds/interlocks, within the window, that hand control to the "
                                   "fallback (rate limiting alone does not count)")
    intervention_window_s: float = Field(5.0, gt=0, le=3600)
    agreement_s: float = Field(5.0, ge=0, le=3600, description="policy must agree this long before hand-back")
    agreement_tolerance: dict[str, float] = Field(default_factory=dict,
                                                  description="per action; default 5 % of its span")
    ood_margin: float = Field(0.1, ge=0, le=100, description="inputs beyond the training range by more than "
                              "this fraction of it are out of distribution")
    ood_z: float = Field(6.0, gt=0, le=1000, description="inputs more than this many training std from the "
                         "training mean are out of distribution")
    ood_cycles: int = Field(3, ge=1, le=100_000, description="consecutive out-of-distribution cycles that hand "
                            "control to the fallback")
    uncertainty_scale: float = Field(1.0, gt=0, le=1000, description="multiplies the threshold a model's contract "
                                     "declares for its uncertainty output (above it the input is out of "
                                     "distribution); models without one are judged by ood_margin and ood_z only")


class AuthoritySection(Section):
    """``[safety.authority]`` (edgewarden/gateway/safety/trust.py): how far a learned policy may
    move from the incumbent's proposal."""

    band: dict[str, float] = Field(default_factory=dict, description="per action: ± engineering units around the "
                                   "incumbent's proposal a learned policy starts with")
    band_fraction: float = Field(0.1, gt=0, le=1, description="the starting band of an action not named in band, as "
                                 "a fraction of its span (max - min); 1 = full authority from the start")
    widen_after_s: float = Field(600.0, ge=0, le=30 * 86_400, description="AUTO this long without a band clip, shield "
                                 "intervention, out-of-distribution input or soft-limit alarm widens the band by "
                                 "widen_factor (up to the action's span); 0 = only an operator widens it")
    widen_factor: float = Field(2.0, gt=1, le=100, description="how much each widening multiplies the band by")
    band_configured_model: Flag = Field(False, description="the model named in [policy] path starts within the band "
                                        "too; by default it has full authority (it was commissioned), and only a "
                                        "model loaded, promoted or dropped in at run time starts within the band")


class SafetySection(Section):
    heartbeat_tag: str = Field(description="writable alive counter the PLC watches")
    estop_input: str | None = Field(None, description="boolean tag: true = PLC e-stop active (trips)")
    hand_auto_tag: str | None = Field(None, description="boolean tag: false = PLC in hand (MANUAL)")
    plc_remote_tag: str | None = Field(None, description="boolean tag: true = the PLC applies the gateway's "
                                       "setpoints; false while in AUTO moves the gateway to MANUAL")
    plc_watchdog_tag: str | None = Field(None, description="boolean tag: true = the PLC's heartbeat watchdog "
                                         "has tripped (it does not accept the gateway's setpoints)")
    applied_settle_s: float = Field(2.0, ge=0, le=600, description="a written setpoint and its applied tag may differ "
                                    "this long before the mismatch is an alarm")
    policy_fault: Literal["fallback", "estop"] = Field("fallback", description="what a policy fault does")
    limits: dict[str, LimitSpec] = Field(default_factory=dict)
    actions: dict[str, ActionSpec] = Field(default_factory=dict)
    interlocks: dict[str, InterlockSpec] = Field(default_factory=dict)
    fallback: FallbackSection = FallbackSection()
    authority: AuthoritySection = AuthoritySection()


class AuditSection(Section):
    dir: FilePath = Field(Path("audit"), description="the log directory (one writer at a time)")
    commit_interval_ms: float = Field(10.0, gt=0, le=1000, description="records gathered this long go out "
                                      "in one write + fsync")
    segment_mb: float = Field(64.0, ge=0.01, le=4096, description="rotate when the next record would pass "
                              "this size")
    segment_max_age_s: float | None = Field(None, gt=0, le=2_678_400, description="also rotate a segment this old")
    signing_key: FilePath | None = Field(None, description="Ed25519 private key (edgewarden audit keygen); "
                                                       "None: no signed checkpoints")
    checkpoint_every_records: int = Field(10_000, ge=1, le=10_000_000, description="a signed checkpoint "
                                          "after this many records ...")
    checkpoint_every_s: float = Field(60.0, gt=0, le=86_400, description="... or this many seconds, "
                                      "whichever comes first")
    checkpoint_export: FilePath | None = Field(None, description="append each checkpoint here (JSON lines); "
                                                             "put it on other storage or ship it off the box")
    retention_max_segments: int | None = Field(None, ge=2, le=1_000_000, description="delete exported "
                                               "segments beyond this count (docs/audit-format.md)")
    retention_max_mb: float | None = Field(None, gt=0, le=10_000_000, description="... beyond this total size")
    retention_max_age_days: float | None = Field(None, gt=0, le=36_500, description="... older than this")


class MetricsSection(Section):
    enabled: Flag = Field(True, description="serve /metrics and /healthz")
    host: str = Field("127.0.0.1", description="listen address")
    port: int = Field(9108, ge=0, le=65535, description="0 = any free port")


class ControlSection(Section):
    socket: FilePath = Field(Path("control.sock"), description="the operator control socket (at most 107 "
                             "bytes once resolved)")
    allowed_uids: list[int] = Field(default_factory=list, description="uids allowed to send commands "
                                    "other than status (besides root and the service's own uid)")
    operators_group: str | None = Field(None, description="members of this group may send commands; "
                                        "with neither set, anyone who can open the socket (0660) may")
    max_connections: int = Field(64, ge=1, le=1024, description="connections waiting for their request "
                                 "line, in all; a new one closes the oldest of the uid holding most")
    max_connections_per_uid: int = Field(8, ge=1, le=1024, description="the same, per client uid: a new "
                                         "one closes that uid's oldest")
    request_timeout_s: float = Field(2.0, gt=0, le=60, description="a connection must send its whole "
                                     "request line within this time")
    accept_per_s: float = Field(500.0, ge=10, le=10_000, description="connections accepted per second "
                                "at most (bursts of 4): bounds the cycle time a connection flood can take")


class LoggingSection(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "console", "json"] = Field("auto", description="auto: human-readable on a "
                                                       "terminal, JSON lines otherwise (journald)")


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
    """`` (got VALUE)`` for a value a user typed; nothing for a whole section or list."""
    if isinstance(value, dict | list):
        return ""
    text = repr(value)
    return f" (got {text if len(text) <= 60 else text[:57] + '...'})"


def schema_problems(exc: ValidationError, env: dict[tuple[str, ...], str] | None = None) -> list[str]:
    """One line per problem; a problem in a value set by an environment variable starts
    with the variable, not the file (the file is not where it is)."""
    out = []
    for err in exc.errors():
        loc = _fmt_loc(err["loc"])
        if err["type"] == "extra_forbidden":
            text = f"{loc}: unknown key (not part of the configuration schema)"
        elif err["type"] == "missing":
            text = f"{loc}: required key is missing"
        else:
            text = f"{loc}: {err['msg'].removeprefix('Value error, ')}{_fmt_input(err.get('input'))}"
        var = from_env(err["loc"], env) if env else None
        out.append(f"{var} (environment): {text}" if var else text)
    return out


def _resolve_paths(s: Settings, base: Path) -> Settings:
    def fix(p: Path) -> Path:
        return p if p.is_absolute() else (base / p).resolve()

    return s.model_copy(
        update={
            "policy": s.policy.model_copy(update={
                "path": None if s.policy.path is None else fix(s.policy.path),
                "pubkey": None if s.policy.pubkey is None else fix(s.policy.pubkey)}),
            "audit": s.audit.model_copy(update={"dir": fix(s.audit.dir), **{
                k: fix(v) for k in ("signing_key", "checkpoint_export") if (v := getattr(s.audit, k)) is not None}}),
            "control": s.control.model_copy(update={"socket": fix(s.control.socket)}),
            "gateway": s.gateway.model_copy(update={} if s.gateway.timing_trace is None
                                            else {"timing_trace": fix(s.gateway.timing_trace)}),
            "connections": {name: _resolve_connection(c, fix, s.gateway) for name, c in s.connections.items()},
        }
    )


def _resolve_connection(conn: Any, fix: Any, gw: GatewaySection) -> Any:
    update: dict[str, Any] = {k: fix(v) for k, v in conn.__dict__.items() if isinstance(v, Path)}
    update.update(conn.with_defaults(gw))
    return conn.model_copy(update=update) if update else conn


MAX_SOCKET_PATH = 107  # bytes in sockaddr_un.sun_path, less its terminating NUL


def _file_problems(s: Settings) -> list[str]:
    """Limits of the resolved paths themselves."""
    n = len(str(s.control.socket).encode())
    if n > MAX_SOCKET_PATH:
        return [f"control.socket: {s.control.socket} is {n} bytes long; a Unix socket path holds at most "
                f"{MAX_SOCKET_PATH}: choose a shorter path"]
    return []


CONFIG_MAX_BYTES = 4 * 2**20  # a configuration file: a few KiB; anything near this is not one


def control_socket_of(path: Path | str) -> Path:
    """``[control] socket`` of a config file (the variable EDGEWARDEN_CONTROL__SOCKET wins),
    without validating the rest: operator commands need the socket, not the plant's secrets."""
    path = Path(path)
    try:
        data = tomllib.loads(read_text(path, what="configuration file", max_bytes=CONFIG_MAX_BYTES, error=ConfigError))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    control = data.get("control")
    value = os.environ.get(f"{ENV_PREFIX}CONTROL__SOCKET") or (
        control.get("socket") if isinstance(control, dict) else None) or ControlSection().socket
    if not isinstance(value, str | Path) or not str(value):
        raise ConfigError(f"{path}: control.socket: expected a path")
    socket = Path(value).expanduser()
    return socket if socket.is_absolute() else (path.resolve().parent / socket).resolve()


def host_problems(s: Settings) -> list[str]:
    """What this machine must have for the config to run (``config check`` and ``run``
    refuse without it): the model file, the operators' group."""
    import grp

    out = []
    if s.policy.path is not None and not s.policy.path.is_file():
        out.append(f"policy.path: {s.policy.path} does not exist (or is not a file)")
    group = s.control.operators_group
    if group is not None:
        try:
            grp.getgrnam(group)
        except KeyError:
            out.append(f"control.operators_group: there is no group {group!r} on this machine: create it "
                       f"(groupadd {group}) or change the key; otherwise every operator is refused")
    return out


def invalid(path: Path, problems: list[str]) -> ConfigError:
    """Every problem as one error, a line each: ``FILE: key: what`` (``VARIABLE
    (environment): ...`` for a problem an environment variable brought in)."""
    lines = "\n".join(f"  {p}" if p.startswith(ENV_PREFIX) else f"  {path}: {p}" for p in problems)
    noun = "problem" if len(problems) == 1 else "problems"
    return ConfigError(f"invalid configuration, {len(problems)} {noun}:\n{lines}")


def check_host(loaded: LoadedConfig) -> None:
    problems = host_problems(loaded.settings)
    if problems:
        raise invalid(loaded.path, problems)


def check_secrets(loaded: LoadedConfig) -> None:
    """What ``run`` would find only at start-up, for ``config check`` to find first: the
    signing key is readable, private to the service and an Ed25519 key. (Not part of
    :func:`load_config`: operators who only read the socket path cannot read the key.)"""
    s = loaded.settings
    if s.audit.signing_key is not None:
        from edgewarden.gateway.audit.checkpoint import load_private_key
        from edgewarden.gateway.errors import AuditError

        try:
            load_private_key(s.audit.signing_key)
        except AuditError as exc:
            raise invalid(loaded.path, [f"audit.signing_key: {exc}"]) from None


def load_config(path: Path | str) -> LoadedConfig:
    """Read, validate and cross-check a config file; raise ConfigError listing every problem."""
    path = Path(path)
    raw = read_regular(path, what="configuration file", max_bytes=CONFIG_MAX_BYTES, error=ConfigError)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    env = env_variables(dict(os.environ))
    problems = env_problems(env, Settings)
    settings: Settings | None = None
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        problems += schema_problems(exc, env)
    except SettingsError as exc:  # a variable for a whole section that is not JSON
        problems.append(f"{exc} (environment): a variable that sets a whole section must hold a JSON object; "
                        "set single keys as EDGEWARDEN_SECTION__KEY")
    else:
        problems += cross_problems(settings)
    if settings is not None and not problems:
        settings = _resolve_paths(settings, path.resolve().parent)
        problems += _file_problems(settings)
    if problems:
        raise invalid(path, problems)
    assert settings is not None
    return LoadedConfig(
        settings=settings,
        path=path,
        sha256=hashlib.sha256(raw).hexdigest(),
    )
