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

import array
import asyncio
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState, UASocketProtocol
from asyncua.common.utils import Buffer
from asyncua.crypto.security_policies import SecurityPolicyAes256Sha256RsaPss, SecurityPolicyBasic256Sha256
from asyncua.ua.ua_binary import nodeid_to_binary, struct_from_binary, struct_to_binary

from gateway.config import DataType, OpcUaConnection, TagSpec
from gateway.errors import TransportError
from gateway.io.tags import Quality, Snapshot, TagMap, as_index
from gateway.io.transport import (LinkHealth, WriteError, WritePlan, bounded, check_write, merge_outcomes,
                                  write_error)

_VARIANT: dict[DataType, ua.VariantType] = {
    "double": ua.VariantType.Double,
    "float": ua.VariantType.Float,
    "float32": ua.VariantType.Float,
    "bool": ua.VariantType.Boolean,
    "int16": ua.VariantType.Int16,
    "uint16": ua.VariantType.UInt16,
    "int32": ua.VariantType.Int32,
    "uint32": ua.VariantType.UInt32,
}

_COMMS_ERRORS = (OSError, TimeoutError, asyncio.TimeoutError, ConnectionError, ua.UaError)
_NO_SUCH_NODE = frozenset({ua.StatusCodes.BadNodeIdUnknown, ua.StatusCodes.BadNodeIdInvalid})
_POLICIES = {"Basic256Sha256": SecurityPolicyBasic256Sha256, "Aes256Sha256RsaPss": SecurityPolicyAes256Sha256RsaPss}
_INT_BITS = {"int16": 16, "uint16": 16, "int32": 32, "uint32": 32}
_PLAIN = frozenset((float, int, bool))
_BAD = int(Quality.BAD)
FALLBACK_MS = 250.0  # fallback_after_ms when unset (load_config sets it: half the max data age)

for _name in ("asyncua.common.subscription", "asyncua.client.client", "asyncua.client.ua_client",
              "asyncua.client.ua_session"):
    # revised-parameter warnings on every connect/subscribe; our own log says what matters
    logging.getLogger(_name).setLevel(logging.ERROR)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]


def _to_wire(spec: TagSpec, value: float) -> object:
    raw = (value - spec.offset) / spec.scale
    if spec.datatype == "bool":
        return bool(raw)
    if spec.datatype in ("double", "float"):
        return float(raw)
    value = int(round(raw))
    bits = _INT_BITS.get(spec.datatype)
    if bits is not None and spec.range is None:
        value %= 1 << bits  # a counter without a range wraps (the heartbeat)
        if not spec.datatype.startswith("u") and value >= 1 << (bits - 1):
            value -= 1 << bits
    return value


class _ReadRequest:
    """One link's cycle Read request, its NodesToRead encoded once.

    asyncua's ``read_attributes`` builds a ReadValueId per node and encodes the whole
    request on every call (pure Python: ~0.6 ms for 64 nodes, ~14 ms for 2,000 here);
    the body never changes, so only the request header is encoded per cycle. The
    message goes out through the session's own protocol object exactly as asyncua sends
    it (request handle and id, security token, chunking, signing/encryption), and the
    answer is decoded and checked as ``read_attributes`` does (asyncua 2.1 internals:
    pinned below 2.2; tests/integration/test_io_opcua.py covers every path through it).
    """

    def __init__(self, node_ids: list[ua.NodeId]) -> None:
        params = ua.ReadParameters()
        params.NodesToRead = [ua.ReadValueId(NodeId=n, AttributeId=ua.AttributeIds.Value) for n in node_ids]
        self.type_id = nodeid_to_binary(ua.ReadRequest().TypeId)
        self.body = struct_to_binary(params)
        self.header = ua.RequestHeader()

    def encode(self, timeout_s: float, proto: UASocketProtocol) -> bytes:
        hdr = self.header
        proto._setup_request_header(hdr, timeout_s)  # noqa: SLF001 (asyncua's own handle/token bookkeeping)
        hdr.Timestamp = datetime.now(UTC)
        return self.type_id + struct_to_binary(hdr) + self.body

    async def read(self, client: Client, timeout_s: float) -> list[ua.DataValue]:
        proto = client.uaclient.protocol
        if proto is None or proto.transport is None:
            raise ConnectionError("Connection is not open")
        if proto.pre_request_hook is not None:  # surfaces a failed keep-alive, as send_request does
            await proto.pre_request_hook()
        binreq = self.encode(timeout_s, proto)
        request_id = proto._request_id + 1  # noqa: SLF001
        proto.revolve_security_token()
        msg = proto._connection.message_to_binary(  # noqa: SLF001
            binreq, message_type=ua.MessageType.SecureMessage, request_id=request_id)
        proto._request_id = request_id  # noqa: SLF001
        future: asyncio.Future[Buffer] = asyncio.get_running_loop().create_future()
        proto._callbackmap[request_id] = future  # noqa: SLF001
        proto.transport.write(msg)
        data = await future
        proto.check_answer(data, " in response to ReadRequest")
        response = struct_from_binary(ua.ReadResponse, data)
        response.ResponseHeader.ServiceResult.check()
        return response.Results  # type: ignore[no-any-return]


def _convert(dv: ua.DataValue) -> tuple[float, Quality, float]:
    """One DataValue: (raw number or NaN, quality, source timestamp or NaN). A status that is
    not Good decides the quality; a Good status on a value that is not a number is BAD."""
    status = dv.StatusCode
    variant = dv.Value
    value = variant.Value if variant is not None else None
    number = isinstance(value, (bool, int, float))
    if status is not None and not status.is_good():
        quality = Quality.UNCERTAIN if status.is_uncertain() else Quality.BAD
    else:
        quality = Quality.GOOD if number else Quality.BAD
    ts = dv.SourceTimestamp or dv.ServerTimestamp
    return (float(value) if number else math.nan), quality, (ts.timestamp() if ts is not None else math.nan)  # type: ignore[arg-type]


class _SubCache:
    """Subscription mode: each notification is converted when it arrives (on the event
    loop, while the cycle sleeps) into arrays in the link's tag order, so the cycle's
    read is four array copies whatever changed (docs/performance.md, Control cycle).
    The arrays are numpy views of ``array``/``bytearray`` buffers: a per-item store into
    those costs a third of one into a numpy array."""

    def __init__(self, specs: list[TagSpec]) -> None:
        n = len(specs)
        self.scale = [s.scale for s in specs]
        self.offset = [s.offset for s in specs]
        self._values = array.array("d", [math.nan]) * n
        self._quality = bytearray([Quality.NO_DATA]) * n
        self._source_ts = array.array("d", [math.nan]) * n
        self.values = np.frombuffer(self._values, dtype=np.float64)
        self.quality = np.frombuffer(self._quality, dtype=np.uint8)
        self.source_ts = np.frombuffer(self._source_ts, dtype=np.float64)
        self.seen = bytearray(n)
        self.missing = n  # tags without a notification (or a poll) yet

    def store(self, pos: int, dv: ua.DataValue) -> None:
        """One notified value; decides as :func:`_convert` (tested equal)."""
        variant = dv.Value
        value = variant.Value if variant is not None else None
        if type(value) in _PLAIN:
            status = dv.StatusCode
            severity = status.value >> 30 if status is not None else 0  # 00 Good, 01 Uncertain, 1x Bad
            self._values[pos] = value * self.scale[pos] + self.offset[pos]
            self._quality[pos] = severity if severity < _BAD else _BAD
            ts = dv.SourceTimestamp or dv.ServerTimestamp
            self._source_ts[pos] = ts.timestamp() if ts is not None else math.nan
        else:
            raw, quality, stamp = _convert(dv)
            self._values[pos] = raw * self.scale[pos] + self.offset[pos]
            self._quality[pos] = quality
            self._source_ts[pos] = stamp
        if not self.seen[pos]:
            self.seen[pos] = 1
            self.missing -= 1

    def fill(self, snap: Snapshot, index: slice | np.ndarray, now: float) -> None:
        """Every cached tag into the snapshot, received now: the subscription is alive and
        says an unchanged value is still current."""
        snap.values[index] = self.values
        snap.quality[index] = self.quality
        snap.source_ts[index] = self.source_ts
        snap.recv_mono[index] = now

    def load(self, snap: Snapshot, index: slice | np.ndarray) -> None:
        """After a poll: the snapshot's fresh values are the cache's from now on."""
        self.values[:] = snap.values[index]
        self.quality[:] = snap.quality[index]
        self.source_ts[:] = snap.source_ts[index]
        self.seen[:] = b"\x01" * len(self.seen)
        self.missing = 0


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


@dataclass
class _Link:
    """One server: its client, the tags read from it, and its health."""

    name: str
    spec: OpcUaConnection
    read_names: list[str]
    read_slots: np.ndarray  # snapshot indices of read_names
    read_specs: list[TagSpec]
    read_index: slice | np.ndarray  # read_slots, as a slice where they are contiguous
    scale: np.ndarray
    offset: np.ndarray
    client: Client | None = None
    node_ids: list[ua.NodeId] = field(default_factory=list)
    positions: dict[ua.NodeId, int] = field(default_factory=dict)
    request: _ReadRequest | None = None
    sub: _SubCache | None = None  # subscription mode: this session's notified values
    last_notify_mono: float = -math.inf
    last_poll_mono: float = -math.inf
    sub_failed: str = ""
    answered_mono: float = -math.inf  # the server's last answer (or the session's start)
    health: LinkHealth = field(default_factory=LinkHealth)
    reconnect_task: asyncio.Task[None] | None = None
    backoff_s: float = 0.0  # next reconnect wait; back to reconnect_min_s only after a good read
    broken: list[Client] = field(default_factory=list)  # dropped clients still to disconnect


def _cert_der(path: object) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    data = Path(str(path)).read_bytes()
    cert = x509.load_pem_x509_certificate(data) if data.lstrip().startswith(b"-----") \
        else x509.load_der_x509_certificate(data)
    return cert.public_bytes(Encoding.DER)


def _first_cert(chain: bytes | None) -> bytes:
    """The leaf of a DER certificate chain (a SEQUENCE with a definite length)."""
    if not chain:
        return b""
    if chain[1] & 0x80:
        n = chain[1] & 0x7F
        length = int.from_bytes(chain[2:2 + n], "big") + 2 + n
    else:
        length = chain[1] + 2
    return bytes(chain[:length])


def _thumb(der: bytes) -> str:
    import hashlib

    return hashlib.sha256(der).hexdigest()[:16] if der else "none"


async def _quiet_disconnect(client: Client) -> None:
    try:
        await asyncio.wait_for(client.disconnect(), timeout=0.5)
    except Exception:  # noqa: BLE001 - the session never came up; nothing to save
        pass


def _refusal(link: _Link, exc: ua.UaStatusCodeError) -> str:
    """A clear message for a server that answered but refused us."""
    code = getattr(exc, "code", None)
    name = ua.StatusCode(code).name if code is not None else type(exc).__name__
    hints = {
        "BadUserAccessDenied": "the server refused the username/password or user certificate",
        "BadIdentityTokenInvalid": "the server refused the identity token",
        "BadIdentityTokenRejected": "the server refused the identity (wrong username or password?)",
        "BadSecurityPolicyRejected": "the server does not offer this security policy",
        "BadCertificateUntrusted": "the server does not trust our certificate",
        "BadSecurityChecksFailed": "security checks failed (certificate or policy mismatch)",
    }
    hint = hints.get(name, "the server refused the session")
    return f"OPC UA connection {link.name!r} to {link.spec.url}: {hint} ({name})"


class OpcUaTransport:
    """The Transport for every connection of type ``opcua``."""

    def __init__(self, tags: TagMap, connections: dict[str, OpcUaConnection]) -> None:
        self._tags = tags
        self._links: dict[str, _Link] = {}
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
            except TransportError:
                await self.close()
                raise
            except _COMMS_ERRORS as exc:
                await self.close()
                if link.spec.security_policy != "None":
                    raise TransportError(
                        f"secure connection {link.name!r} to {link.spec.url} failed: {_describe(exc)}. "
                        f"The server must offer {link.spec.security_policy} SignAndEncrypt, present the "
                        "pinned certificate in server_certificate, and trust our certificate."
                    ) from None
                if "No matching endpoints" in str(exc):
                    raise TransportError(
                        f"OPC UA connection {link.name!r} to {link.spec.url}: the server offers no endpoint "
                        "without security; set security_policy (and its certificates) in "
                        f"[connections.{link.name}]") from None
                raise TransportError(
                    f"cannot reach PLC connection {link.name!r} at {link.spec.url}: {_describe(exc)}. "
                    "Check that the server is running and the address and port in "
                    f"[connections.{link.name}] are right."
                ) from None
            await self._check_nodes(link)

    async def _check_nodes(self, link: _Link) -> None:
        """At start: every configured node exists on the server (one read of them all), so a
        wrong node id is named as such, not found later as a tag that never reads good."""
        assert link.client is not None
        try:
            dvs = await asyncio.wait_for(link.request.read(link.client, link.spec.timeout_s),  # type: ignore[union-attr]
                                         timeout=link.spec.timeout_s)
        except (*_COMMS_ERRORS, TimeoutError):
            return  # an unanswered read is comms, which the cycle handles; the nodes are not judged
        missing = [f"tags.{name} node {spec.node!r}: {dv.StatusCode.name}"
                   for name, spec, dv in zip(link.read_names, link.read_specs, dvs, strict=True)
                   if dv.StatusCode.value in _NO_SUCH_NODE]
        if missing:
            await self.close()
            raise TransportError(
                f"OPC UA connection {link.name!r} at {link.spec.url}: the server has no such node for "
                f"{len(missing)} tag(s): {'; '.join(missing)}. Check the node ids in [tags] against the "
                "server's address space (namespace index and identifier)")

    async def _open(self, link: _Link) -> None:
        spec = link.spec
        client = Client(url=spec.url, timeout=spec.timeout_s)
        client.application_uri = spec.application_uri
        try:
            if spec.security_policy != "None":
                await client.set_security(
                    _POLICIES[spec.security_policy], certificate=str(spec.certificate),
                    private_key=str(spec.private_key), server_certificate=str(spec.server_certificate),
                    mode=ua.MessageSecurityMode.SignAndEncrypt)
            if spec.username is not None:
                client.set_user(spec.username)
                client.set_password(spec.password or "")
            if spec.user_certificate is not None:
                await client.load_client_certificate(str(spec.user_certificate))
                await client.load_private_key(str(spec.user_private_key))
        except (OSError, ValueError) as exc:
            raise TransportError(f"OPC UA connection {link.name!r}: cannot load its certificates or keys: "
                                 f"{_describe(exc)}") from None
        if spec.security_policy != "None":
            await self._check_endpoint(link)
        try:
            await asyncio.wait_for(client.connect(), timeout=spec.timeout_s * 2)
        except ua.UaStatusCodeError as exc:
            await _quiet_disconnect(client)
            raise TransportError(_refusal(link, exc)) from None
        except BaseException:
            await _quiet_disconnect(client)
            raise
        link.node_ids = [ua.NodeId.from_string(s.node) for s in link.read_specs]
        link.positions = {nid: i for i, nid in enumerate(link.node_ids)}
        link.request = _ReadRequest(link.node_ids)
        link.sub = _SubCache(link.read_specs) if spec.mode == "subscribe" else None
        link.sub_failed = ""
        link.last_notify_mono = -math.inf
        if spec.mode == "subscribe" and link.node_ids:
            try:
                sub = await asyncio.wait_for(
                    client.create_subscription(spec.publish_interval_ms, _SubHandler(link)), timeout=spec.timeout_s)
                await asyncio.wait_for(
                    sub.subscribe_data_change([client.get_node(n) for n in link.node_ids]), timeout=spec.timeout_s)
            except BaseException:
                await _quiet_disconnect(client)
                raise
        link.client = client
        link.answered_mono = time.monotonic()
        link.health.connected = True
        link.health.state = "up"
        link.health.last_error = ""

    async def _check_endpoint(self, link: _Link) -> None:
        """Before a secure session: the server must offer our policy with SignAndEncrypt and
        present exactly the pinned certificate. Both give a clear refusal instead of a
        handshake that times out. (asyncua also checks the certificate in CreateSession.)"""
        spec = link.spec
        probe = Client(url=spec.url, timeout=spec.timeout_s)
        endpoints = await asyncio.wait_for(probe.connect_and_get_server_endpoints(), timeout=spec.timeout_s * 2)
        uri = _POLICIES[spec.security_policy].URI
        offered = sorted({f"{e.SecurityPolicyUri.rsplit('#', 1)[-1]}/{e.SecurityMode.name.rstrip('_')}" for e in endpoints})
        match = [e for e in endpoints
                 if e.SecurityPolicyUri == uri and e.SecurityMode == ua.MessageSecurityMode.SignAndEncrypt]
        if not match:
            raise TransportError(
                f"OPC UA connection {link.name!r} to {spec.url}: refused: the server does not offer "
                f"{spec.security_policy} with SignAndEncrypt (it offers {', '.join(offered) or 'nothing'}); "
                "security is required, so the gateway will not connect without it")
        pinned = _cert_der(spec.server_certificate)  # type: ignore[arg-type]
        presented = _first_cert(match[0].ServerCertificate)
        if presented != pinned:
            raise TransportError(
                f"OPC UA connection {link.name!r} to {spec.url}: refused: the server's certificate "
                f"(SHA-256 {_thumb(presented)}) is not the pinned one in server_certificate "
                f"{spec.server_certificate} (SHA-256 {_thumb(pinned)})")

    async def _drop(self, link: _Link, exc: BaseException) -> None:
        link.health.connected = False
        link.health.state = "closed" if self._closing else "reconnecting"
        link.health.last_error = _describe(exc)
        client, link.client = link.client, None
        if client is not None:
            link.broken.append(client)  # closed by the reconnect task: the cycle never waits on it
        if not self._closing and (link.reconnect_task is None or link.reconnect_task.done()):
            link.reconnect_task = asyncio.create_task(self._reconnect(link), name=f"reconnect-{link.name}")

    @staticmethod
    async def _discard_broken(link: _Link) -> None:
        while link.broken:
            await _quiet_disconnect(link.broken.pop())

    async def _reconnect(self, link: _Link) -> None:
        await self._discard_broken(link)
        delay = max(link.backoff_s, link.spec.reconnect_min_s)
        while not self._closing:
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2.0, link.spec.reconnect_max_s)
            link.backoff_s = delay
            try:
                await self._open(link)
            except (*_COMMS_ERRORS, TransportError) as exc:
                link.health.last_error = _describe(exc)
                continue
            link.health.reconnects += 1
            self._log.warning("reconnected to %s (%s)", link.name, link.spec.url)
            return

    async def close(self) -> None:
        self._closing = True
        for link in self._links.values():
            if link.reconnect_task is not None:
                link.reconnect_task.cancel()
                await asyncio.gather(link.reconnect_task, return_exceptions=True)
            await self._discard_broken(link)
            if link.client is not None:
                try:
                    await asyncio.wait_for(link.client.disconnect(), timeout=1.0)
                except Exception:  # noqa: BLE001 - best effort on shutdown
                    pass
                link.client = None
            link.health.connected = False
            link.health.state = "closed"

    def health(self) -> dict[str, LinkHealth]:
        return {name: link.health for name, link in self._links.items()}

    # ---- cycle I/O ---------------------------------------------------------------
    async def read(self, snap: Snapshot, deadline: float | None = None) -> None:
        links = list(self._links.values())
        if len(links) == 1:
            await self._read_link(links[0], snap, deadline)
        else:
            await asyncio.gather(*(self._read_link(link, snap, deadline) for link in links))

    async def _late(self, link: _Link) -> None:
        """No answer by the cycle's deadline: keep the session unless the server has
        answered nothing for the link's own timeout (then drop it and reconnect)."""
        if time.monotonic() - link.answered_mono >= link.spec.timeout_s:
            await self._drop(link, TimeoutError(f"no answer for {link.spec.timeout_s:g} s"))
        else:
            link.health.late += 1
            link.health.last_error = "no answer by the cycle's deadline"

    async def _read_link(self, link: _Link, snap: Snapshot, deadline: float | None) -> None:
        client = link.client
        if client is None:
            snap.mark(link.read_slots, Quality.NO_DATA)
            return
        if link.spec.mode == "subscribe":
            if client.uaclient.state is not UaClientState.CONNECTED or link.sub_failed:
                snap.mark(link.read_slots, Quality.NO_DATA)
                await self._drop(link, ConnectionError(link.sub_failed or "session lost"))
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
        t0 = time.monotonic()
        try:
            async with bounded(deadline, link.spec.timeout_s):  # no extra task per request, unlike wait_for
                dvs = await link.request.read(client, link.spec.timeout_s)  # type: ignore[union-attr]
        except TimeoutError:
            snap.mark(link.read_slots, Quality.NO_DATA)
            await self._late(link)
            return
        except _COMMS_ERRORS as exc:
            snap.mark(link.read_slots, Quality.NO_DATA)
            await self._drop(link, exc)
            return
        now = time.monotonic()
        link.answered_mono = now
        link.health.rtt_s = now - t0
        link.health.last_ok_mono = now
        link.backoff_s = 0.0
        link.last_poll_mono = now
        self._fill(snap, link, dvs, now)
        if link.sub is not None:
            link.sub.load(snap, link.read_index)

    @staticmethod
    def _fill(snap: Snapshot, link: _Link, dvs: list[ua.DataValue], now: float) -> None:
        """DataValues into the snapshot: three list comprehensions and a few array operations
        instead of a loop of per-tag stores (docs/performance.md, Control cycle). Anything
        unusual — a missing variant or status, a value that is not a plain bool/int/float —
        takes the per-tag path, which decides the same way."""
        try:
            raw = [dv.Value.Value for dv in dvs]  # type: ignore[union-attr]
            codes = [dv.StatusCode.value for dv in dvs]  # type: ignore[union-attr]
        except AttributeError:
            OpcUaTransport._fill_each(snap, link, dvs, now)
            return
        if not {type(v) for v in raw} <= _PLAIN:
            OpcUaTransport._fill_each(snap, link, dvs, now)
            return
        idx = link.read_index
        values = np.array(raw, dtype=float)
        values *= link.scale
        values += link.offset
        snap.values[idx] = values
        # the status code's two top bits: 00 Good, 01 Uncertain, 10/11 Bad
        snap.quality[idx] = np.minimum(np.array(codes, dtype=np.uint32) >> 30, Quality.BAD)
        snap.source_ts[idx] = [ts.timestamp() if (ts := dv.SourceTimestamp or dv.ServerTimestamp) is not None
                               else math.nan for dv in dvs]
        snap.recv_mono[idx] = now

    @staticmethod
    def _fill_each(snap: Snapshot, link: _Link, dvs: list[ua.DataValue], now: float) -> None:
        for slot, spec, dv in zip(link.read_slots, link.read_specs, dvs, strict=True):
            raw, quality, ts = _convert(dv)
            snap.values[slot] = raw * spec.scale + spec.offset
            snap.quality[slot] = quality
            snap.source_ts[slot] = ts
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

    async def write(self, plan: WritePlan, values: Sequence[float], deadline: float | None = None) -> None:
        check_write(plan, values)
        groups = self._plan_groups(plan)
        if len(groups) == 1:
            await self._write_link(*groups[0], plan, values, deadline)
            return
        results = await asyncio.gather(*(self._write_link(*g, plan, values, deadline) for g in groups),
                                       return_exceptions=True)
        error = merge_outcomes(len(plan.names), [(g[2], r) for g, r in zip(groups, results, strict=True)])
        if error is not None:
            raise error

    async def _write_link(self, link: _Link, node_ids: list[ua.NodeId], positions: list[int], plan: WritePlan,
                          values: Sequence[float], deadline: float | None) -> None:
        client = link.client
        if client is None:
            raise write_error(plan, positions, "not_attempted: not connected",
                              f"cannot write to {link.name!r}: not connected ({link.health.last_error})")
        dvs = []
        for i in positions:
            spec = plan.specs[i]
            dvs.append(ua.DataValue(ua.Variant(_to_wire(spec, values[i]), _VARIANT[spec.datatype])))
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
            await self._late(link)
            raise write_error(plan, positions, "timeout",
                              f"write to {link.name!r}: no acknowledgement by the deadline") from None
        except _COMMS_ERRORS as exc:
            await self._drop(link, exc)
            raise write_error(plan, positions, f"failed: {_describe(exc)}",
                              f"write to {link.name!r} failed: {_describe(exc)}") from None
        link.answered_mono = time.monotonic()
        refused = [(i, status.name) for i, status in zip(positions, results, strict=True) if not status.is_good()]
        if refused:
            outcomes = ["ok"] * len(plan.names)
            for i, name in refused:
                outcomes[i] = f"failed: {name}"
            raise WriteError(f"PLC {link.name!r} refused the write of tag {plan.names[refused[0][0]]!r}: "
                             f"{refused[0][1]}", outcomes)
