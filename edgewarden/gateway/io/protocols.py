"""The table of protocols, keyed by a connection's ``type``: it drives the config's
union of connection models, the per-tag source rules and the composite transport.

Adding a protocol means one package under edgewarden/gateway/io/ (its connection model, source
rules, codec and transport) and one row here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgewarden.gateway.io.modbus import connection as modbus
from edgewarden.gateway.io.opcua import connection as opcua

if TYPE_CHECKING:
    from edgewarden.gateway.config import TagSpec
    from edgewarden.gateway.io.tags import TagMap
    from edgewarden.gateway.io.transport import Transport


@dataclass(frozen=True)
class Protocol:
    type: str
    connection: type[Any]  # its pydantic model, with ``type`` as the discriminator
    source_problems: Callable[[str, TagSpec], list[str]]  # the tag's source fields fit this protocol
    source_keys: Callable[[TagSpec], list[tuple[Any, ...]]]  # what a tag reads, for the alias check
    describe_key: Callable[[TagSpec, tuple[Any, ...]], str]
    transport_path: str  # "module:Class", imported only when a transport is built

    def transport(self, tags: TagMap, connections: dict[str, Any], *, read_only: bool = False,
                  period_s: float | None = None) -> Transport:
        module, _, name = self.transport_path.partition(":")
        cls = getattr(importlib.import_module(module), name)
        return cls(tags, connections, read_only=read_only, period_s=period_s)  # type: ignore[no-any-return]


PROTOCOLS: dict[str, Protocol] = {
    "opcua": Protocol("opcua", opcua.OpcUaConnection, opcua.source_problems, opcua.source_keys,
                      opcua.describe_key, "edgewarden.gateway.io.opcua.transport:OpcUaTransport"),
    "modbus": Protocol("modbus", modbus.ModbusConnection, modbus.source_problems, modbus.source_keys,
                       modbus.describe_key, "edgewarden.gateway.io.modbus.transport:ModbusTransport"),
}
DEFAULT_TYPE = "opcua"  # a connection without ``type``
