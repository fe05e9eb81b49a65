"""The ``[connections.NAME]`` model of ``type = "opcua"`` and the rules for its tags."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from edgewarden.gateway.configbase import FilePath, Flag, Section, on_loopback
from edgewarden.gateway.errors import ConfigError
from edgewarden.gateway.readfile import read_text

if TYPE_CHECKING:
    from edgewarden.gateway.config import GatewaySection, TagSpec

SecurityPolicyName = Literal["None", "Basic256Sha256", "Aes256Sha256RsaPss"]


class OpcUaConnection(Section):
    """An OPC UA server. Security, when set, is SignAndEncrypt with the server certificate pinned."""

    type: Literal["opcua"] = "opcua"
    url: str = Field(pattern=r"^opc\.tcp://", description="opc.tcp://HOST:PORT[/PATH]")
    timeout_s: float = Field(2.0, gt=0, le=60, description="the session's request timeout (a cycle never "
                             "waits longer than its own budget, docs/io.md)")
    reconnect_min_s: float = Field(0.2, gt=0, le=600, description="first reconnect delay (doubles)")
    reconnect_max_s: float = Field(10.0, gt=0, le=600, description="longest reconnect delay")
    mode: Literal["poll", "subscribe"] = Field("poll", description="subscribe = data-change notifications")
    publish_interval_ms: float = Field(0.0, ge=0, le=60_000, description="subscription publishing interval")
    fallback_after_ms: float | None = Field(None, gt=0, le=60_000, description="no notification for this long: poll "
                                            "instead; default: half of the gateway's max data age")
    security_policy: SecurityPolicyName = Field("None", description="None is allowed on loopback only, unless "
                                                "allow_insecure = true (docs/operations.md, *Security*)")
    require_security: Flag = Field(False, description="refuse to run with security_policy = None")
    allow_insecure: Flag = Field(False, description="accept security_policy = None on a server off loopback: "
                                 "anyone on that network can read, forge and replay the gateway's traffic")
    certificate: FilePath | None = Field(None, description="client application certificate (DER or PEM)")
    private_key: FilePath | None = None
    server_certificate: FilePath | None = Field(None, description="pinned server certificate")
    application_uri: str = "urn:edgewarden:client"
    username: str | None = None
    password: str | None = Field(None, description="set it from EDGEWARDEN_CONNECTIONS__<name>__PASSWORD, or use "
                                 "password_credential")
    password_credential: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="the name of "
                                            "a systemd credential holding the password (LoadCredential=, read "
                                            "from $CREDENTIALS_DIRECTORY at connect; service install sets it up)")
    user_certificate: FilePath | None = Field(None, description="certificate identity (with user_private_key)")
    user_private_key: FilePath | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        """opc.tcp://HOST:PORT[/PATH] with a host and a port in 1..65535, nothing else."""
        if any(c.isspace() or not c.isprintable() for c in url):
            raise ValueError("the url holds a space or a control character")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"not a valid opc.tcp url ({exc})") from None
        if not parts.hostname:
            raise ValueError("the url names no host (opc.tcp://HOST:PORT)")
        if port is None or port == 0:
            raise ValueError("the url names no port in 1..65535 (opc.tcp://HOST:PORT; OPC UA's usual is 4840)")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError("the url has a query, fragment or user part: give the login as username/password")
        return url

    @model_validator(mode="after")
    def _valid(self) -> OpcUaConnection:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must not exceed reconnect_max_s")
        if self.security_policy == "None":
            if self.require_security:
                raise ValueError("require_security = true needs security_policy Basic256Sha256 or "
                                 "Aes256Sha256RsaPss")
            if not self.allow_insecure and self._unsecured_off_loopback:
                raise ValueError(f"security_policy None (no signing, no encryption, no server authentication) "
                                 f"to {self.url}, which is not on loopback: set security_policy = "
                                 f"\"Basic256Sha256\" with certificate, private_key and server_certificate "
                                 f"(docs/operations.md, *Security*), or allow_insecure = true to accept the risk")
        else:
            missing = [k for k in ("certificate", "private_key", "server_certificate") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"security_policy {self.security_policy} needs {', '.join(missing)} "
                                 "(the server certificate is pinned; there is no trust-on-first-use)")
        if self.password is not None and self.password_credential is not None:
            raise ValueError("give password or password_credential, not both")
        if (self.username is None) != (self.password is None and self.password_credential is None):
            raise ValueError("username and password (or password_credential) go together")
        if (self.user_certificate is None) != (self.user_private_key is None):
            raise ValueError("user_certificate and user_private_key go together")
        if self.username is not None and self.user_certificate is not None:
            raise ValueError("choose one identity: username/password or user_certificate")
        return self

    def peer(self) -> str:
        return self.url

    @property
    def _unsecured_off_loopback(self) -> bool:
        return self.security_policy == "None" and not on_loopback(urlsplit(self.url).hostname)

    def warnings(self, name: str) -> list[str]:
        """What ``config check`` and the daemon's start-up warn about (allowed, not advised)."""
        if self._unsecured_off_loopback:
            return [f"connections.{name}: security_policy None to {self.url} (allow_insecure = true): the link is "
                    "neither signed nor encrypted and the server is not authenticated"]
        return []

    def with_defaults(self, gw: GatewaySection) -> dict[str, Any]:
        """Keys set from the gateway's settings where the file left them out."""
        return {"fallback_after_ms": gw.data_age_limit_ms / 2.0} if self.fallback_after_ms is None else {}

    def timing_problems(self, name: str, period_ms: float, age_ms: float) -> list[str]:
        if self.mode == "subscribe" and self.fallback_after_ms is not None \
                and self.fallback_after_ms + period_ms >= age_ms:
            return [f"connections.{name}.fallback_after_ms: {self.fallback_after_ms:g} ms plus one cycle must be "
                    f"less than the max data age ({age_ms:g} ms), or a steady value would be polled too late"]
        return []


def credential(name: str, key: str) -> str:
    """The systemd credential ``name`` (LoadCredential=): the file of that name in
    ``$CREDENTIALS_DIRECTORY``, without its trailing newline. ConfigError when it is not there."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise ConfigError(f"{key} = {name!r}: $CREDENTIALS_DIRECTORY is not set: run the gateway under systemd "
                          f"with LoadCredential={name}:FILE (edgewarden service install adds it)")
    return read_text(Path(directory) / name, what=f"{key} = {name!r}: credential", max_bytes=65536,
                     error=ConfigError).rstrip("\r\n")


def check_node_id(text: str) -> None:
    """A NodeId string asyncua parses (the parser the connection uses, so both agree)."""
    from asyncua import ua

    try:
        node = ua.NodeId.from_string(text)
    except ua.UaError:
        node = None
    if node is None or node.Identifier in ("", None):
        raise ValueError(f"node {text!r} is not an OPC UA NodeId string: write ns=INDEX;s=NAME, "
                         "ns=INDEX;i=NUMBER (or g=GUID, b=BASE64)")


def source_problems(name: str, tag: TagSpec) -> list[str]:
    """A tag on an OPC UA connection names a node."""
    if tag.node is None:
        return [f"tags.{name}: connection {tag.connection!r} is OPC UA: give node, not table/address"]
    return []


def source_keys(tag: TagSpec) -> list[tuple[Any, ...]]:
    """What a tag reads (two tags on one key are two names for one value)."""
    return [("node", tag.node.strip())] if tag.node is not None else []


def describe_key(tag: TagSpec, key: tuple[Any, ...]) -> str:
    return f"node {tag.node!r}"
