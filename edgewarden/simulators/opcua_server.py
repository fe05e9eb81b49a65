"""OPC UA server of a twin: serves a PLC image under ``ns=2;s=<plant>.<tag>``.

Address space (namespace ``urn:edgewarden:twin``, registered first, so index 2)::

    Objects/<plant>                      object, NodeId ns=2;s=<plant>
        Measurements/<plant>.<tag>       Double, read-only
        Setpoints/<plant>.<tag>          writable (Double, UInt32 heartbeat, Boolean commands)
        Status/<plant>.<tag>             Boolean, read-only

Folders have NodeIds ``ns=2;s=<plant>.Measurements`` etc. Every numeric variable carries
``EngineeringUnits`` (UNECE code where known, else the unit text) and ``EURange``.

A client write lands in the image at once (a value setter on each writable node); the
twin calls :meth:`TwinOpcUaServer.publish` after every scan, which writes the tags that
changed since the last publish, each with the image's source timestamp and a status
code from the tag's quality (Good, UncertainSensorNotAccurate, BadSensorFailure).
Read-only variables have AccessLevel/UserAccessLevel CurrentRead; Setpoints add
CurrentWrite. Security is optional (:class:`OpcUaSecurity`): Basic256Sha256
SignAndEncrypt with a generated certificate and username/password users checked for
real; without it the server is NoSecurity/anonymous (a loopback test twin).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.common.callback import CallbackType, ServerItemCallback
from asyncua.common.node import Node
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.permission_rules import SimpleRoleRuleset, User, UserRole
from asyncua.server.address_space import NodeData
from cryptography.x509.oid import ExtendedKeyUsageOID

from edgewarden.gateway.errors import TransportError
from edgewarden.simulators.image import PlcImage, Tag

NAMESPACE_URI = "urn:edgewarden:twin"
log = logging.getLogger(__name__)

_VARIANT = {"double": ua.VariantType.Double, "bool": ua.VariantType.Boolean,
            "uint32": ua.VariantType.UInt32}
_STATUS = {"good": ua.StatusCode(ua.StatusCodes.Good),
           "uncertain": ua.StatusCode(ua.StatusCodes.UncertainSensorNotAccurate),
           "bad": ua.StatusCode(ua.StatusCodes.BadSensorFailure)}
# UNECE Recommendation 20 common codes for the units our plants use.
_UNECE = {"K": "KEL", "L/min": "L2", "mol/L": "C38"}


def quiet_asyncua(verbose: bool = False) -> None:
    """asyncua's server logs every connection, session and revised value at INFO/WARNING.

    Only the server side (``asyncua.server``) is quietened, so that an asyncua client in
    the same process (the gateway, a test) keeps its own logs.
    """
    logging.getLogger("asyncua.server").setLevel(logging.NOTSET if verbose else logging.ERROR)


def _eu_information(units: str) -> ua.EUInformation:
    code = _UNECE.get(units, "")
    unit_id = 0
    for ch in code:  # UNECE code packed as in OPC UA Part 8 (ASCII bytes, big-endian)
        unit_id = (unit_id << 8) | ord(ch)
    return ua.EUInformation(
        NamespaceUri="http://www.opcfoundation.org/UA/units/un/cefact",
        UnitId=unit_id if code else -1,
        DisplayName=ua.LocalizedText(units),
        Description=ua.LocalizedText(units),
    )


@dataclass(frozen=True)
class OpcUaSecurity:
    """Secure the OPC UA server: Basic256Sha256 SignAndEncrypt only, username identities.

    ``cert_dir`` holds ``server_key.pem`` / ``server_cert.der``; both are generated
    (self-signed, one year, RSA 2048) when missing. ``users`` maps user name to password
    (kept only as a salted PBKDF2 hash); ``viewers`` may browse and read but not write.
    Anonymous sessions and unsecured endpoints are refused. The application URI in the
    certificate is ``urn:edgewarden:twin:<plant>``.
    """

    cert_dir: Path
    users: Mapping[str, str]
    viewers: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.users:
            raise ValueError("OPC UA security needs at least one user")
        unknown = set(self.viewers) - set(self.users)
        if unknown:
            raise ValueError(f"viewers not among users: {', '.join(sorted(unknown))}")


class _PasswordUserManager:
    """Checks user name and password for real (asyncua's default accepts any password)."""

    _ITER = 100_000

    def __init__(self, users: Mapping[str, str]) -> None:
        self._hashes: dict[str, tuple[bytes, bytes]] = {}
        for name, password in users.items():
            salt = os.urandom(16)
            self._hashes[name] = (salt, self._hash(password, salt))

    def _hash(self, password: str, salt: bytes) -> bytes:
        return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, self._ITER)

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        entry = self._hashes.get(username or "")
        if entry is None or password is None:
            self._hash(password or "", b"0" * 16)  # same work either way
            log.warning("OPC UA login refused for user %r", username)
            return None
        salt, digest = entry
        if not hmac.compare_digest(self._hash(password, salt), digest):
            log.warning("OPC UA login refused for user %r (wrong password)", username)
            return None
        return User(role=UserRole.User, name=username)


class _ViewerRuleset(SimpleRoleRuleset):
    """asyncua's role rules, minus writes for read-only users."""

    _WRITE = ua.NodeId(ua.ObjectIds.WriteRequest_Encoding_DefaultBinary)

    def __init__(self, viewers: frozenset[str]) -> None:
        super().__init__()
        self._viewers = viewers

    def check_validity(self, user: User, action_type_id: ua.NodeId, body: Any) -> bool:
        if action_type_id == self._WRITE and user.name in self._viewers:
            return False
        return bool(super().check_validity(user, action_type_id, body))


class TwinOpcUaServer:
    """Serve ``image`` for ``plant`` on ``host:port`` (port 0 = ephemeral, see ``port``)."""

    def __init__(self, image: PlcImage, plant: str, host: str = "127.0.0.1", port: int = 0,
                 *, verbose: bool = False, security: OpcUaSecurity | None = None) -> None:
        self.image = image
        self.security = security
        self.plant = plant
        self.host = host
        self._requested_port = port
        self._verbose = verbose
        self.client_writes = 0  # WriteValues received from clients over the wire (the scan's are not)
        self._server: Server | None = None
        self._nodes: dict[str, Node] = {}
        self._published: dict[str, int] = {}
        self.port: int | None = None
        self.ns: int | None = None
        self.advertise_url: str | None = None  # endpoint URL to advertise (a proxy's)
        self._publish_soon: asyncio.Task[None] | None = None
        image.on_write.append(self._written)

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("OPC UA server not started")
        return f"opc.tcp://{_url_host(self.host)}:{self.port}"

    def nodeid(self, tag: str) -> ua.NodeId:
        return ua.NodeId(f"{self.plant}.{tag}", self.ns or 2)

    async def start(self) -> None:
        quiet_asyncua(self._verbose)
        self._nodes = {}
        self._published = {}
        sec = self.security
        server = Server(user_manager=_PasswordUserManager(sec.users) if sec else None)
        await server.init()
        server.set_server_name(f"edgewarden twin ({self.plant})")
        server.set_endpoint(f"opc.tcp://{_url_host(self.host)}:{self._requested_port}")
        if sec is None:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        else:
            await self._secure(server, sec)
        self.ns = await server.register_namespace(NAMESPACE_URI)
        await self._build(server)
        self._conformant_writes(server)
        start_logger = logging.getLogger("asyncua.server.server")
        level = start_logger.level
        if not self._verbose:  # a bind error is ours to report, without asyncua's traceback
            start_logger.setLevel(logging.CRITICAL)
        try:
            await server.start()
        except OSError as exc:
            raise TransportError(
                f"cannot serve OPC UA on {self.host}:{self._requested_port}: {exc.strerror or exc}"
            ) from None
        finally:
            start_logger.setLevel(level)
        self._server = server
        self.port = _bound_port(server)
        if self._requested_port == 0 or self.advertise_url:
            # Endpoints were made before the bind, with port 0: advertise the real one
            # (or the fault proxy's, which clients connect to).
            for edp in server.iserver.endpoints:
                edp.EndpointUrl = self.advertise_url or self.url
        await self.publish()

    async def _secure(self, server: Server, sec: OpcUaSecurity) -> None:
        app_uri = f"urn:edgewarden:twin:{self.plant}"
        await server.set_application_uri(app_uri)
        key, cert = self.certificate_paths(sec.cert_dir)
        sec.cert_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # a new directory: no one else looks in
        await setup_self_signed_certificate(
            key, cert, app_uri, socket.gethostname(), [ExtendedKeyUsageOID.SERVER_AUTH],
            {"commonName": f"edgewarden twin {self.plant}"})
        os.chmod(key, 0o600)  # asyncua writes it with the umask's mode
        await server.load_certificate(str(cert))
        await server.load_private_key(str(key))
        server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt],
                                   permission_ruleset=_ViewerRuleset(sec.viewers))
        server.set_identity_tokens([ua.UserNameIdentityToken])

    @staticmethod
    def certificate_paths(cert_dir: Path) -> tuple[Path, Path]:
        """(private key PEM, certificate DER) of a secured twin's server."""
        return cert_dir / "server_key.pem", cert_dir / "server_cert.der"

    async def restart(self) -> None:
        """Stop and serve again on the same port (clients lose their sessions)."""
        await self.stop()
        if self.port is not None:
            self._requested_port = self.port
        await self.start()

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        pending, self._publish_soon = self._publish_soon, None
        if pending is not None and not pending.done():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pending
        # asyncua's internal clock task sleeps 1 s between updates and stop() waits for
        # it; cancel it instead, so that a twin stops in milliseconds (tests start many).
        iserver = server.iserver
        task = getattr(iserver, "time_task", None)
        if task is not None and not task.done():
            iserver._time_task_stop = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            iserver.time_task = None
        await server.stop()

    def _written(self, name: str) -> None:
        """A write landed in the image: publish it now, not only after the next scan."""
        if self._server is None or (self._publish_soon and not self._publish_soon.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._publish_soon = loop.create_task(self.publish())

    async def publish(self) -> None:
        """Write every tag that changed since the last publish, with its source timestamp."""
        server = self._server
        if server is None:
            return
        img = self.image
        for name, node in self._nodes.items():
            seq = img.seq(name)
            if self._published.get(name) == seq:
                continue
            self._published[name] = seq
            tag = img.tags[name]
            dv = ua.DataValue(
                ua.Variant(img[name], _VARIANT[tag.vtype]),
                StatusCode=_STATUS[img.quality(name)],
                SourceTimestamp=datetime.fromtimestamp(img.stamp(name), UTC),
                ServerTimestamp=datetime.now(UTC),
            )
            await server.write_attribute_value(node.nodeid, dv)

    # ---- address space ----------------------------------------------------------------
    async def _build(self, server: Server) -> None:
        ns = self.ns
        assert ns is not None
        obj = await server.nodes.objects.add_object(ua.NodeId(self.plant, ns), f"{ns}:{self.plant}")
        folders: dict[str, Node] = {}
        for group in ("Measurements", "Setpoints", "Status", "Alarms"):
            folders[group] = await obj.add_folder(ua.NodeId(f"{self.plant}.{group}", ns),
                                                  f"{ns}:{group}")
        for tag in self.image.tags.values():
            node = await folders[tag.group].add_variable(
                ua.NodeId(f"{self.plant}.{tag.name}", ns), f"{ns}:{tag.name}",
                self.image[tag.name], varianttype=_VARIANT[tag.vtype],
            )
            await self._describe(node, tag)
            if tag.writable:
                await node.set_writable(True)
                server.set_attribute_value_setter(node.nodeid, self._setter(tag))
            self._nodes[tag.name] = node

    def _conformant_writes(self, server: Server) -> None:
        """Answer client writes as a conformant PLC does (OPC UA Part 4, Write): a node that
        does not exist BadNodeIdUnknown, a read-only one BadNotWritable, a value outside
        the tag's EURange BadOutOfRange; asyncua alone lets an anonymous (admin) session
        write any node and any value. Server-side writes (the scan's publish) are not
        client writes and do not pass here."""
        service = server.iserver.attribute_service
        write = service.write
        by_node = {self.nodeid(name): tag for name, tag in self.image.tags.items()}
        aspace = server.iserver.aspace

        def refusal(wv: ua.WriteValue) -> ua.StatusCode | None:
            if wv.NodeId not in aspace:
                return ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown)
            tag = by_node.get(wv.NodeId)
            if tag is None or wv.AttributeId != ua.AttributeIds.Value:
                return None  # not a process value: asyncua's own rules
            if not tag.writable:
                return ua.StatusCode(ua.StatusCodes.BadNotWritable)
            value = wv.Value.Value.Value if wv.Value is not None and wv.Value.Value is not None else None
            if tag.vtype == "double" and isinstance(value, (int, float)) and tag.low is not None \
                    and tag.high is not None and not tag.low <= value <= tag.high:
                return ua.StatusCode(ua.StatusCodes.BadOutOfRange)
            return None

        async def conformant(params: ua.WriteParameters, user: User = User(role=UserRole.Admin)) -> list[ua.StatusCode]:
            verdicts = [refusal(wv) for wv in params.NodesToWrite]
            allowed = [wv for wv, v in zip(params.NodesToWrite, verdicts, strict=True) if v is None]
            done = iter(await write(ua.WriteParameters(NodesToWrite=allowed), user) if allowed else [])
            return [v if v is not None else next(done) for v in verdicts]

        service.write = conformant  # type: ignore[method-assign]

        def count(event: ServerItemCallback, _dispatcher: object) -> None:
            if event.is_external:  # a client on the wire, not this server's own sessions
                self.client_writes += len(event.request_params.NodesToWrite)

        server.subscribe_server_callback(CallbackType.PreWrite, count)

    async def _describe(self, node: Node, tag: Tag) -> None:
        if tag.description:
            await node.write_attribute(ua.AttributeIds.Description, ua.DataValue(
                ua.Variant(ua.LocalizedText(tag.description), ua.VariantType.LocalizedText)))
        if tag.vtype != "double":
            return
        await node.add_property(0, "EngineeringUnits", _eu_information(tag.units),
                                varianttype=ua.VariantType.ExtensionObject)
        if tag.low is not None and tag.high is not None:
            await node.add_property(0, "EURange", ua.Range(Low=tag.low, High=tag.high),
                                    varianttype=ua.VariantType.ExtensionObject)

    def _setter(self, tag: Tag):
        image = self.image

        def set_value(node: NodeData, attr: ua.AttributeIds, dv: ua.DataValue) -> None:
            value = dv.Value.Value if dv.Value is not None else None
            if value is not None and value != image[tag.name]:
                image.write(tag.name, value)  # a client write; publish() writes equal values
            if dv.SourceTimestamp is None:
                now = datetime.now(UTC)
                dv = replace(dv, SourceTimestamp=now, ServerTimestamp=dv.ServerTimestamp or now)
            node.attributes[attr].value = dv
            node.attributes[attr].value_callback = None

        return set_value


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _bound_port(server: Server) -> int:
    """The port the asyncio server socket is bound to (the real one when asked for 0)."""
    bserver = server.bserver
    sock_server = getattr(bserver, "_server", None)
    if sock_server is not None and sock_server.sockets:
        return int(sock_server.sockets[0].getsockname()[1])
    return int(bserver.port)
