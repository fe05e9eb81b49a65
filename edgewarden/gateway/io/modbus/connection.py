"""The ``[connections.NAME]`` model of ``type = "modbus"`` and the rules for its tags."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from edgewarden.gateway.configbase import FilePath, Flag, Section, on_loopback

if TYPE_CHECKING:
    from edgewarden.gateway.config import GatewaySection, TagSpec

ModbusTable = Literal["holding", "input", "coil", "discrete"]
BIT_TABLES = ("coil", "discrete")
# registers a value of each datatype takes in a Modbus register table (a coil/discrete: one bit)
MODBUS_REGISTERS: dict[str, int] = {"int16": 1, "uint16": 1, "bool": 1, "int32": 2, "uint32": 2,
                                    "float32": 2, "float": 2, "double": 4}


class ModbusConnection(Section):
    """A Modbus TCP endpoint (one socket); tags pick the device (unit) id behind it."""

    type: Literal["modbus"]
    host: str = Field(min_length=1)
    port: int = Field(502, ge=1, le=65535)
    timeout_s: float = Field(1.0, gt=0, le=60, description="per request; a dead device costs at most this")
    retries: int = Field(0, ge=0, le=5, description="extra attempts of a timed-out request")
    reconnect_min_s: float = Field(0.2, gt=0, le=600, description="first reconnect delay (doubles)")
    reconnect_max_s: float = Field(10.0, gt=0, le=600, description="longest reconnect delay")
    max_block: int = Field(120, ge=1, le=125, description="most registers in one read request")
    tls: Flag = False
    ca_file: FilePath | None = Field(None, description="CA bundle that verifies the server (TLS)")
    certificate: FilePath | None = Field(None, description="client certificate (TLS)")
    private_key: FilePath | None = None

    @model_validator(mode="after")
    def _valid(self) -> ModbusConnection:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must not exceed reconnect_max_s")
        if not self.tls and any(v is not None for v in (self.ca_file, self.certificate, self.private_key)):
            raise ValueError("ca_file/certificate/private_key need tls = true")
        if self.tls and self.ca_file is None:
            raise ValueError("tls = true needs ca_file: the server certificate is always verified")
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("certificate and private_key go together")
        return self

    def peer(self) -> str:
        return f"{self.host}:{self.port}"

    def warnings(self, name: str) -> list[str]:
        """What ``config check`` and the daemon's start-up warn about (allowed, not advised)."""
        if not self.tls and not on_loopback(self.host):
            return [f"connections.{name}: Modbus TCP to {self.peer()} without TLS: anyone on that network can read "
                    "and forge the gateway's requests; keep the link on an isolated control network"]
        return []

    def with_defaults(self, gw: GatewaySection) -> dict[str, Any]:
        return {}

    def timing_problems(self, name: str, period_ms: float, age_ms: float) -> list[str]:
        return []


def width(tag: TagSpec) -> int:
    """Registers (or bits, for coil/discrete tables) one tag occupies."""
    return 1 if tag.table in BIT_TABLES else MODBUS_REGISTERS[tag.datatype]


def source_problems(name: str, tag: TagSpec) -> list[str]:
    """A tag on a Modbus connection names a table and an address, fits it, and is
    writable only in a table that can be written."""
    out = []
    if tag.node is not None:
        out.append(f"tags.{name}: connection {tag.connection!r} is Modbus: give table and address, not node")
    if tag.writable and tag.table in ("input", "discrete"):
        out.append(f"tags.{name}.writable: a Modbus {tag.table} table is read-only")
    if tag.datatype == "float":
        out.append(f"tags.{name}.datatype: say float32 or double for a Modbus tag")
    return out


def source_keys(tag: TagSpec) -> list[tuple[Any, ...]]:
    """Every register (or bit) a tag reads (two tags on one key are two names for one value)."""
    if tag.table is None or tag.address is None:
        return []
    return [(tag.unit, tag.table, tag.address + i) for i in range(width(tag))]


def describe_key(tag: TagSpec, key: tuple[Any, ...]) -> str:
    return f"unit {tag.unit} {tag.table} register {key[-1]}"
