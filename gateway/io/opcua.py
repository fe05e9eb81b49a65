"""OPC UA transport (asyncua): batched polling reads and writes, reconnect with backoff.

Each configured connection holds one asyncua client. Reads of all its tags go out as one
Read request per cycle; writes as one Write request per plan and connection, each value
sent with the tag's declared variant type (asyncua would otherwise guess Int64 for a
Python int). A failed request marks that connection's values NO_DATA (never the last good
value presented as fresh), drops the session and starts a background reconnect with
capped exponential backoff and jitter, which builds a new session from scratch.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from asyncua import Client, ua

from gateway.config import DataType, OpcUaConnection, TagSpec
from gateway.errors import TransportError
from gateway.io.tags import Quality, Snapshot, TagMap
from gateway.io.transport import LinkHealth, WritePlan, check_write

_VARIANT: dict[DataType, ua.VariantType] = {
    "double": ua.VariantType.Double,
    "float": ua.VariantType.Float,
    "bool": ua.VariantType.Boolean,
    "int16": ua.VariantType.Int16,
    "uint16": ua.VariantType.UInt16,
    "int32": ua.VariantType.Int32,
    "uint32": ua.VariantType.UInt32,
}

_COMMS_ERRORS = (OSError, TimeoutError, asyncio.TimeoutError, ConnectionError, ua.UaError)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]


def _to_wire(spec: TagSpec, value: float) -> object:
    raw = (value - spec.offset) / spec.scale
    if spec.datatype == "bool":
        return bool(raw)
    if spec.datatype in ("double", "float"):
        return float(raw)
    return int(round(raw))


@dataclass
class _Link:
    """One server: its client, the tags read from it, and its health."""

    name: str
    spec: OpcUaConnection
    read_names: list[str]
    read_slots: np.ndarray  # snapshot indices of read_names
    read_specs: list[TagSpec]
    client: Client | None = None
    node_ids: list[ua.NodeId] = field(default_factory=list)
    health: LinkHealth = field(default_factory=LinkHealth)
    reconnect_task: asyncio.Task[None] | None = None


class OpcUaTransport:
    """The Transport for every connection of type ``opcua``."""

    def __init__(self, tags: TagMap, connections: dict[str, OpcUaConnection]) -> None:
        self._tags = tags
        self._links: dict[str, _Link] = {}
        for name, spec in connections.items():
            names = [t for t in tags.readable if tags.specs[t].connection == name]
            self._links[name] = _Link(
                name=name,
                spec=spec,
                read_names=names,
                read_slots=tags.indices(names),
                read_specs=[tags.specs[t] for t in names],
            )
        self._write_cache: dict[tuple[str, ...], list[tuple[_Link, list[ua.NodeId], list[int]]]] = {}
        self._closing = False
        self._log = logging.getLogger("edgewarden.opcua")

    # ---- connection management ---------------------------------------------------
    async def connect(self) -> None:
        """Connect every link once; an unreachable server at start is a clear error."""
        for link in self._links.values():
            try:
                await self._open(link)
            except _COMMS_ERRORS as exc:
                await self.close()
                raise TransportError(
                    f"cannot reach PLC connection {link.name!r} at {link.spec.url}: {_describe(exc)}. "
                    "Check that the server is running and the address and port in "
                    f"[connections.{link.name}] are right."
                ) from None

    async def _open(self, link: _Link) -> None:
        client = Client(url=link.spec.url, timeout=link.spec.timeout_s)
        await asyncio.wait_for(client.connect(), timeout=link.spec.timeout_s * 2)
        link.node_ids = [ua.NodeId.from_string(s.node) for s in link.read_specs]
        link.client = client
        link.health.connected = True
        link.health.last_error = ""

    async def _drop(self, link: _Link, exc: BaseException) -> None:
        link.health.connected = False
        link.health.last_error = _describe(exc)
        client, link.client = link.client, None
        if client is not None:
            try:
                await asyncio.wait_for(client.disconnect(), timeout=0.5)
            except Exception:  # noqa: BLE001 - the session is already broken; nothing to save
                pass
        if not self._closing and (link.reconnect_task is None or link.reconnect_task.done()):
            link.reconnect_task = asyncio.create_task(self._reconnect(link), name=f"reconnect-{link.name}")

    async def _reconnect(self, link: _Link) -> None:
        delay = link.spec.reconnect_min_s
        while not self._closing:
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            try:
                await self._open(link)
            except _COMMS_ERRORS as exc:
                link.health.last_error = _describe(exc)
                delay = min(delay * 2.0, link.spec.reconnect_max_s)
                continue
            link.health.reconnects += 1
            self._log.warning("reconnected to %s (%s)", link.name, link.spec.url)
            return

    async def close(self) -> None:
        self._closing = True
        for link in self._links.values():
            if link.reconnect_task is not None:
                link.reconnect_task.cancel()
            if link.client is not None:
                try:
                    await asyncio.wait_for(link.client.disconnect(), timeout=1.0)
                except Exception:  # noqa: BLE001 - best effort on shutdown
                    pass
                link.client = None
            link.health.connected = False

    def health(self) -> dict[str, LinkHealth]:
        return {name: link.health for name, link in self._links.items()}

    # ---- cycle I/O ---------------------------------------------------------------
    async def read(self, snap: Snapshot) -> None:
        for link in self._links.values():
            if link.client is None:
                snap.mark(link.read_slots, Quality.NO_DATA)
                continue
            t0 = time.monotonic()
            try:
                dvs = await asyncio.wait_for(
                    link.client.uaclient.read_attributes(link.node_ids, ua.AttributeIds.Value),
                    timeout=link.spec.timeout_s,
                )
            except _COMMS_ERRORS as exc:
                snap.mark(link.read_slots, Quality.NO_DATA)
                await self._drop(link, exc)
                continue
            now = time.monotonic()
            link.health.rtt_s = now - t0
            link.health.last_ok_mono = now
            self._fill(snap, link, dvs, now)

    @staticmethod
    def _fill(snap: Snapshot, link: _Link, dvs: list[ua.DataValue], now: float) -> None:
        for slot, spec, dv in zip(link.read_slots, link.read_specs, dvs, strict=True):
            status = dv.StatusCode
            variant = dv.Value
            value = variant.Value if variant is not None else None
            if status is not None and not status.is_good():
                quality = Quality.UNCERTAIN if status.is_uncertain() else Quality.BAD
            elif isinstance(value, (bool, int, float)):
                quality = Quality.GOOD
            else:
                quality = Quality.BAD
            if isinstance(value, (bool, int, float)):
                snap.values[slot] = float(value) * spec.scale + spec.offset
            else:
                snap.values[slot] = math.nan
            snap.quality[slot] = quality
            ts = dv.SourceTimestamp or dv.ServerTimestamp
            snap.source_ts[slot] = ts.timestamp() if ts is not None else math.nan
            snap.recv_mono[slot] = now

    def _plan_groups(self, plan: WritePlan) -> list[tuple[_Link, list[ua.NodeId], list[int]]]:
        groups = self._write_cache.get(plan.names)
        if groups is None:
            by_link: dict[str, tuple[_Link, list[ua.NodeId], list[int]]] = {}
            for i, spec in enumerate(plan.specs):
                link = self._links[spec.connection]
                entry = by_link.setdefault(spec.connection, (link, [], []))
                entry[1].append(ua.NodeId.from_string(spec.node))
                entry[2].append(i)
            groups = self._write_cache[plan.names] = list(by_link.values())
        return groups

    async def write(self, plan: WritePlan, values: Sequence[float]) -> None:
        check_write(plan, values)
        for link, node_ids, positions in self._plan_groups(plan):
            client = link.client
            if client is None:
                raise TransportError(f"cannot write to {link.name!r}: not connected ({link.health.last_error})")
            dvs = []
            for i in positions:
                spec = plan.specs[i]
                dvs.append(ua.DataValue(ua.Variant(_to_wire(spec, values[i]), _VARIANT[spec.datatype])))
            try:
                results = await asyncio.wait_for(
                    client.uaclient.write_attributes(node_ids, dvs, ua.AttributeIds.Value),
                    timeout=link.spec.timeout_s,
                )
            except _COMMS_ERRORS as exc:
                await self._drop(link, exc)
                raise TransportError(f"write to {link.name!r} failed: {_describe(exc)}") from None
            for i, status in zip(positions, results, strict=True):
                if not status.is_good():
                    raise TransportError(
                        f"PLC {link.name!r} refused the write of tag {plan.names[i]!r}: {status.name}"
                    )
