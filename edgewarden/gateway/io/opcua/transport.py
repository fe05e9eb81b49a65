"""OPC UA transport (asyncua): batched polling reads and writes, reconnect with backoff.

Each configured connection holds one asyncua client. Reads of all its tags go out as one
Read request per cycle; writes as one Write request per plan and connection, each value
sent with the tag's declared variant type (asyncua would otherwise guess Int64 for a
Python int). A failed request marks that connection's values NO_DATA (never the last good
value presented as fresh), drops the session and starts a background reconnect with
capped exponential backoff and jitter, which builds a new session from scratch, and
in subscription mode a new subscription with every monitored item.

Subscription mode (``mode = "subscribe"``): each data-change notification is converted
on arrival (value in engineering units, quality, timestamp) into a per-tag cache that the
cycle copies into its snapshot. When no notification has arrived for
``fallback_after_ms`` (values that do not change, or a subscription that silently
stopped), the cycle polls with one batched Read instead, so a value is never older than
that without the gateway having asked the server. A session the client sees closed
(state no longer CONNECTED, or a Bad status-change notification) is dropped and rebuilt.

Security: with ``security_policy`` Basic256Sha256 or Aes256Sha256RsaPss the channel is
SignAndEncrypt and the server certificate is pinned (asyncua refuses a session whose
certificate differs). Identity is anonymous, username/password, or a user certificate.
Failures at connect are TransportErrors that say which of these went wrong.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState

from edgewarden.gateway.config import TagSpec
from edgewarden.gateway.errors import AccessError, ProtocolError, TransportError
from edgewarden.gateway.io.link import Link, LinkedTransport, WritePart, describe
from edgewarden.gateway.io.opcua import codec
from edgewarden.gateway.io.opcua.connection import OpcUaConnection
from edgewarden.gateway.io.opcua.request import ReadRequest
from edgewarden.gateway.io.opcua.security import identity
from edgewarden.gateway.io.opcua.session import close_quietly, open_client
from edgewarden.gateway.io.tags import Quality, Snapshot, TagMap, as_index
from edgewarden.gateway.io.transport import WriteError, WritePlan, bounded, write_error

_COMMS_ERRORS = (OSError, TimeoutError, asyncio.TimeoutError, ConnectionError, ua.UaError)
_NO_SUCH_NODE = frozenset({ua.StatusCodes.BadNodeIdUnknown, ua.StatusCodes.BadNodeIdInvalid})
_CURRENT_WRITE = 0x02  # AccessLevel bit: the current value may be written (OPC UA Part 3, AccessLevelType)
# a write the server refuses for who is asking, not for the link: reconnecting changes nothing
_ACCESS_DENIED = frozenset({ua.StatusCodes.BadUserAccessDenied, ua.StatusCodes.BadNotWritable,
                            ua.StatusCodes.BadWriteNotSupported})
FALLBACK_MS = 250.0  # fallback_after_ms when unset (load_config sets it: half the max data age)

for _name in ("asyncua.common.subscription", "asyncua.client.client", "asyncua.client.ua_client",
              "asyncua.client.ua_session"):
    # revised-parameter warnings on every connect/subscribe; our own log says what matters
    logging.getLogger(_name).setLevel(logging.ERROR)


class _SubHandler:
    """asyncua subscription handler: notifications land in the link's cache."""

    def __init__(self, link: _Link) -> None:
        self.link = link

    def datachange_notification(self, node: object, val: object, data: object) -> None:
        link = self.link
        pos = link.positions.get(node.nodeid)  # type: ignore[attr-defined]
        if pos is not None and link.sub is not None:
            link.sub.store(pos, data.monitored_item.Value)  # type: ignore[attr-defined]
            link.last_notify_mono = time.monotonic()

    def status_change_notification(self, status: ua.StatusChangeNotification) -> None:
        if not status.Status.is_good():
            self.link.sub_failed = f"subscription status {status.Status.name}"

    def event_notification(self, event: object) -> None:  # pragma: no cover - no events subscribed
        pass


@dataclass(kw_only=True)
class _Link(Link):
    """One server: its client, the tags read from it, and its health."""

    spec: OpcUaConnection
    read_names: list[str]
    read_slots: np.ndarray  # snapshot indices of read_names
    read_specs: list[TagSpec]
    read_index: slice | np.ndarray  # read_slots, as a slice where they are contiguous
    scale: np.ndarray
    offset: np.ndarray
    booleans: list[bool]  # per read tag: its datatype is bool (a number there, or a Boolean elsewhere, is BAD)
    node_ids: list[ua.NodeId] = field(default_factory=list)
    positions: dict[ua.NodeId, int] = field(default_factory=dict)
    request: ReadRequest | None = None
    sub: codec.SubCache | None = None  # subscription mode: this session's notified values
    last_notify_mono: float = -math.inf
    last_poll_mono: float = -math.inf
    sub_failed: str = ""
    written: list[tuple[str, str]] = field(default_factory=list)  # (tag, node) the gateway writes here


class OpcUaTransport(LinkedTransport[_Link]):
    """The Transport for every connection of type ``opcua``."""

    comms_errors = _COMMS_ERRORS

    def __init__(self, tags: TagMap, connections: dict[str, OpcUaConnection], *, read_only: bool = False,
                 period_s: float | None = None) -> None:
        super().__init__("edgewarden.opcua", read_only=read_only, period_s=period_s)
        for name, spec in connections.items():
            names = [t for t in tags.readable if tags.specs[t].connection == name]
            slots = tags.indices(names)
            specs = [tags.specs[t] for t in names]
            self._links[name] = _Link(
                name=name,
                spec=spec,
                read_names=names,
                read_slots=slots,
                read_specs=specs,
                read_index=as_index(slots),
                scale=np.array([t.scale for t in specs]),
                offset=np.array([t.offset for t in specs]),
                booleans=[t.datatype == "bool" for t in specs],
                written=[(t, spec.node) for t, spec in tags.specs.items()
                         if spec.writable and spec.connection == name and spec.node is not None],
            )
            self._overlap(self._links[name], len(tags.readable), as_index(slots))

    # ---- connection management ---------------------------------------------------
    async def connect(self) -> None:
        """Connect every link once; an unreachable server at start is a clear error."""
        for link in self._links.values():
            try:
                await self._open(link)
            except TransportError:
                await self.close()
                raise
            except _COMMS_ERRORS as exc:
                await self.close()
                if link.spec.security_policy != "None":
                    raise TransportError(
                        f"secure connection {link.name!r} to {link.spec.url} failed: {describe(exc)}. "
                        f"The server must offer {link.spec.security_policy} SignAndEncrypt, present the "
                        "pinned certificate in server_certificate, and trust our certificate."
                    ) from None
                if "No matching endpoints" in str(exc):
                    raise TransportError(
                        f"OPC UA connection {link.name!r} to {link.spec.url}: the server offers no endpoint "
                        "without security; set security_policy (and its certificates) in "
                        f"[connections.{link.name}]") from None
                raise TransportError(
                    f"cannot reach PLC connection {link.name!r} at {link.spec.url}: {describe(exc)}. "
                    "Check that the server is running and the address and port in "
                    f"[connections.{link.name}] are right."
                ) from None
            await self._check_nodes(link)
            await self._check_write_access(link)

    async def _check_nodes(self, link: _Link) -> None:
        """At start: every configured node exists on the server (one read of them all), so a
        wrong node id is named as such, not found later as a tag that never reads good."""
        assert link.client is not None and link.request is not None
        try:
            dvs = await asyncio.wait_for(link.request.read(link.client, link.spec.timeout_s),
                                         timeout=link.spec.timeout_s)
        except (*_COMMS_ERRORS, TimeoutError):
            return  # an unanswered read is comms, which the cycle handles; the nodes are not judged
        try:
            codec.check_count("Read", dvs, len(link.read_specs))
        except ProtocolError as exc:
            await self.close()
            raise ProtocolError(f"OPC UA connection {link.name!r} at {link.spec.url}: {exc}") from None
        missing = [f"tags.{name} node {spec.node!r}: {dv.StatusCode.name}"
                   for name, spec, dv in zip(link.read_names, link.read_specs, dvs, strict=True)
                   if dv.StatusCode.value in _NO_SUCH_NODE]
        if missing:
            await self.close()
            raise TransportError(
                f"OPC UA connection {link.name!r} at {link.spec.url}: the server has no such node for "
                f"{len(missing)} tag(s): {'; '.join(missing)}. Check the node ids in [tags] against the "
                "server's address space (namespace index and identifier)")

    async def _check_write_access(self, link: _Link) -> None:
        """At start: the session's identity may write every tag the gateway writes there
        (UserAccessLevel has CurrentWrite), so a read-only identity is refused with the tags
        named, not found later as writes that never take."""
        assert link.client is not None
        if self.read_only or not link.written:
            return  # monitor writes nothing: a read-only identity is what it should log in as
        nodes = [ua.NodeId.from_string(node) for _, node in link.written]
        try:
            dvs = await asyncio.wait_for(
                link.client.uaclient.read_attributes(nodes, ua.AttributeIds.UserAccessLevel),
                timeout=link.spec.timeout_s)
        except (*_COMMS_ERRORS, TimeoutError):
            return  # comms, which the cycle handles
        try:
            codec.check_count("Read", dvs, len(nodes))
        except ProtocolError as exc:
            await self.close()
            raise ProtocolError(f"OPC UA connection {link.name!r} at {link.spec.url}: {exc}") from None
        denied = [f"tags.{name} node {node!r}"
                  for (name, node), dv in zip(link.written, dvs, strict=True)
                  if dv.StatusCode.is_good() and isinstance(dv.Value.Value, int)
                  and not dv.Value.Value & _CURRENT_WRITE]
        if denied:
            await self.close()
            raise AccessError(
                f"OPC UA connection {link.name!r} at {link.spec.url}: the server does not let "
                f"{identity(link.spec)} write {len(denied)} tag(s) the gateway writes: {'; '.join(denied)} "
                "(UserAccessLevel without CurrentWrite). Give that identity write access on the server, or "
                f"set username/password or user_certificate in [connections.{link.name}] to one that has it")

    async def _open(self, link: _Link) -> None:
        spec = link.spec
        client = await open_client(link.name, spec)
        link.node_ids = [ua.NodeId.from_string(s.node) for s in link.read_specs]
        link.positions = {nid: i for i, nid in enumerate(link.node_ids)}
        link.request = ReadRequest(link.node_ids)
        link.sub = codec.SubCache(link.read_specs) if spec.mode == "subscribe" else None
        link.sub_failed = ""
        link.last_notify_mono = -math.inf
        if spec.mode == "subscribe" and link.node_ids:
            try:
                sub = await asyncio.wait_for(
                    client.create_subscription(spec.publish_interval_ms, _SubHandler(link)), timeout=spec.timeout_s)
                await asyncio.wait_for(
                    sub.subscribe_data_change([client.get_node(n) for n in link.node_ids]), timeout=spec.timeout_s)
            except BaseException:
                await close_quietly(client)
                raise
        link.opened(client)

    async def _dispose(self, client: Client) -> None:
        await close_quietly(client)

    # ---- cycle I/O ---------------------------------------------------------------
    async def _read_link(self, link: _Link, snap: Snapshot, deadline: float | None) -> None:
        client = link.client
        if client is None:
            snap.mark(link.read_slots, Quality.NO_DATA)
            return
        if link.spec.mode == "subscribe":
            if client.uaclient.state is not UaClientState.CONNECTED or link.sub_failed:
                snap.mark(link.read_slots, Quality.NO_DATA)
                self._drop(link, ConnectionError(link.sub_failed or "session lost"))
                return
            now = time.monotonic()
            fallback_s = (link.spec.fallback_after_ms or FALLBACK_MS) / 1000.0
            fresh = now - link.last_notify_mono < fallback_s
            sub = link.sub
            if fresh and now - link.last_poll_mono < fallback_s * 4 \
                    and sub is not None and not sub.missing:
                # the values are current as of the link's last sign of life, not of now
                alive = max(link.last_notify_mono, link.last_poll_mono)
                link.health.last_ok_mono = alive
                sub.fill(snap, link.read_index, alive)
                return
            # no notification lately (or a tag never notified): poll this cycle
        assert link.request is not None
        t0 = time.monotonic()
        try:
            async with bounded(deadline, link.spec.timeout_s):  # no extra task per request, unlike wait_for
                dvs = await link.request.read(client, link.spec.timeout_s)
        except (*_COMMS_ERRORS, ProtocolError) as exc:  # TimeoutError among them: late, not dropped
            self._read_failed(link, snap, link.read_slots, exc)
            return
        now = time.monotonic()
        try:
            codec.fill(snap, link.read_slots, link.read_index, link.scale, link.offset, dvs, now, link.booleans)
        except ProtocolError as exc:  # an answer, but not one to trust: as if none came
            self._read_failed(link, snap, link.read_slots, exc)
            return
        link.answered(now)
        link.health.rtt_s = now - t0
        link.last_poll_mono = now
        if link.sub is not None:
            link.sub.load(snap, link.read_index)

    def _access_denied(self, link: _Link, exc: BaseException) -> None:
        """A write refused for who is asking: the session stays (reconnecting would change
        nothing), the writes go unacknowledged (so comms loss trips in its budget), and the
        reason is logged once and shown in the link's health."""
        self._refused(link, f"the server refuses {identity(link.spec)} the writes the gateway makes "
                            f"({describe(exc)}): give it write access to {', '.join(t for t, _ in link.written)}")

    def _plan(self, plan: WritePlan) -> list[WritePart]:
        by_link: dict[str, WritePart] = {}
        for i, spec in enumerate(plan.specs):
            part = by_link.setdefault(spec.connection, WritePart(self._links[spec.connection], [], []))
            part.prepared.append(ua.NodeId.from_string(spec.node))
            part.positions.append(i)
        return list(by_link.values())

    async def _write_part(self, part: WritePart, plan: WritePlan, values: Sequence[float],
                          deadline: float | None) -> None:
        link, node_ids, positions = part.link, part.prepared, part.positions
        client = link.client
        if client is None:
            raise write_error(plan, positions, "not_attempted: not connected",
                              f"cannot write to {link.name!r}: not connected ({link.health.last_error})")
        dvs = [codec.encode(plan.specs[i], values[i]) for i in positions]
        budget = bounded(deadline, link.spec.timeout_s)
        try:
            try:
                async with budget:
                    results = await client.uaclient.write_attributes(node_ids, dvs, ua.AttributeIds.Value)
            except asyncio.CancelledError:
                # asyncua's own wait_for (wait_for2) answers a cancellation that meets its
                # answer in the same loop turn with a subclass of CancelledError, which
                # asyncio.timeout passes on instead of turning it into TimeoutError: ours,
                # when our deadline fired (a real cancellation of the cycle goes on up)
                if not budget.expired():
                    raise
                raise TimeoutError from None
        except TimeoutError:
            self._late(link)
            raise write_error(plan, positions, "timeout",
                              f"write to {link.name!r}: no acknowledgement by the deadline") from None
        except _COMMS_ERRORS as exc:
            if getattr(exc, "code", None) in _ACCESS_DENIED:  # the link is fine; this identity may not write
                self._access_denied(link, exc)
                raise write_error(plan, positions, f"failed: {describe(exc)}",
                                  f"PLC {link.name!r} refused the write: {describe(exc)}") from None
            self._drop(link, exc)
            raise write_error(plan, positions, f"failed: {describe(exc)}",
                              f"write to {link.name!r} failed: {describe(exc)}") from None
        except Exception as exc:  # noqa: BLE001 - asyncua could not decode the peer's WriteResponse
            fault = ProtocolError(f"protocol fault: a WriteResponse that does not decode "
                                  f"({type(exc).__name__}: {describe(exc)})")
            self._drop(link, fault)
            raise write_error(plan, positions, f"failed: {fault}", f"write to {link.name!r}: {fault}") from None
        link.answered_mono = time.monotonic()
        try:
            codec.check_count("Write", results, len(positions))
        except ProtocolError as exc:
            self._drop(link, exc)
            raise write_error(plan, positions, f"failed: {exc}", f"write to {link.name!r}: {exc}") from None
        refused = [(i, status.name) for i, status in zip(positions, results, strict=True) if not status.is_good()]
        if refused:
            outcomes = ["ok"] * len(plan.names)
            for i, name in refused:
                outcomes[i] = f"failed: {name}"
            raise WriteError(f"PLC {link.name!r} refused the write of tag {plan.names[refused[0][0]]!r}: "
                             f"{refused[0][1]}", outcomes)
