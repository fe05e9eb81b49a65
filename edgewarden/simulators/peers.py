"""Small independent peers for the I/O tests and benchmarks, built directly on pymodbus and
asyncua: servers that are not the twins (they share none of the twins' code), a server
that hangs, a proxy that stops forwarding. All bind 127.0.0.1 on ephemeral ports.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.server import ModbusTcpServer, ModbusTlsServer

from edgewarden.simulators.harness import free_port  # noqa: F401 (re-exported for the I/O tests)


_FC_TABLE = {1: "coil", 5: "coil", 15: "coil", 2: "discrete", 3: "holding", 6: "holding", 16: "holding",
             4: "input"}


class _DictContext(ModbusServerContext):
    """A plain dict datastore: device ids 1 and 2, addresses 0-99 of every table."""

    def __init__(self) -> None:  # not calling super(): it only builds deprecated blocks
        self.simdevices = []
        self.old_simulator = True  # pymodbus routes requests to async_get/setValues
        self.tables = {u: {t: [0] * 100 for t in ("holding", "input", "coil", "discrete")} for u in (1, 2)}
        self.fail_with: ExcCodes | None = None  # answer every request with this exception

    def device_ids(self) -> list[int]:
        return [1, 2]

    async def async_getValues(self, device_id: int, func_code: int, address: int,
                              count: int = 1) -> list[int] | list[bool] | ExcCodes:
        if self.fail_with is not None:
            return self.fail_with
        if device_id not in self.tables:
            return ExcCodes.GATEWAY_NO_RESPONSE
        if address + count > 100:
            return ExcCodes.ILLEGAL_ADDRESS
        data = self.tables[device_id][_FC_TABLE[func_code]][address:address + count]
        return [bool(v) for v in data] if func_code in (1, 2, 5, 15) else data

    async def async_setValues(self, device_id: int, func_code: int, address: int,
                              values: list[int] | list[bool]) -> ExcCodes | None:
        if self.fail_with is not None:
            return self.fail_with
        if device_id not in self.tables or address + len(values) > 100:
            return ExcCodes.ILLEGAL_ADDRESS
        self.tables[device_id][_FC_TABLE[func_code]][address:address + len(values)] = [int(v) for v in values]
        return None


class ModbusServer:
    """Device ids 1 and 2, each with 100 registers/bits per table (addresses 0-99).

    Reading past address 99 answers ILLEGAL_ADDRESS. ``port`` survives stop/start so a
    test can restart the server where the client expects it.
    """

    def __init__(self, port: int = 0, sslctx: ssl.SSLContext | None = None) -> None:
        self.context = _DictContext()
        self.port = port
        self.sslctx = sslctx
        self._server: ModbusTcpServer | None = None

    def set_regs(self, table: str, address: int, values: list[int], unit: int = 1) -> None:
        self.context.tables[unit][table][address:address + len(values)] = list(values)

    def get_regs(self, table: str, address: int, count: int, unit: int = 1) -> list[int]:
        return self.context.tables[unit][table][address:address + count]

    async def start(self) -> None:
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        if self.sslctx is not None:
            server: ModbusTcpServer = ModbusTlsServer(self.context, address=("127.0.0.1", self.port),
                                                      sslctx=self.sslctx)
        else:
            server = ModbusTcpServer(self.context, address=("127.0.0.1", self.port))
        await server.serve_forever(background=True)
        self._server = server
        self.port = int(server.transport.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()


async def _close_server(server: asyncio.Server | None, writers: list[asyncio.StreamWriter]) -> None:
    """Stop accepting, drop every connection the peer holds, wait until closed."""
    if server is not None:
        server.close()
        for w in writers:
            w.close()
        await server.wait_closed()


class HungServer:
    """Accepts TCP connections and never answers (a hung PLC)."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._writers.append(writer)
            while await reader.read(4096):
                pass

        self._server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        await _close_server(self._server, self._writers)


def tls_files(tmp: Path, host: str = "127.0.0.1") -> dict[str, Path]:
    """A CA, a server certificate for ``host`` signed by it, and an unrelated CA."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        k = key()
        c = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name(cn)).public_key(k.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
             .not_valid_after(now + datetime.timedelta(days=30))
             .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
             .sign(k, hashes.SHA256()))
        return k, c

    ca_key, ca_cert = ca("test ca")
    _, other_ca = ca("other ca")
    sk = key()
    san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))])
    server = (x509.CertificateBuilder().subject_name(name(host)).issuer_name(ca_cert.subject)
              .public_key(sk.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
              .add_extension(san, critical=False).sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    out = {"ca": tmp / "ca.pem", "other_ca": tmp / "other_ca.pem", "cert": tmp / "server.pem",
           "key": tmp / "server.key"}
    out["ca"].write_bytes(ca_cert.public_bytes(pem))
    out["other_ca"].write_bytes(other_ca.public_bytes(pem))
    out["cert"].write_bytes(server.public_bytes(pem))
    out["key"].write_bytes(sk.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return out


class OpcUaServer:
    """An asyncua server with a few variables in namespace 2 (``ns=2;s=test.<name>``).

    With ``secure=(cert, key)`` it offers only Basic256Sha256 and Aes256Sha256RsaPss
    SignAndEncrypt; with ``users`` it checks passwords (asyncua's default accepts any).
    ``viewers`` (among ``users``) may read but every Write they send is refused
    (BadUserAccessDenied, for the whole request, as asyncua's role rules do);
    ``user_read_only`` variables report a UserAccessLevel without CurrentWrite (what a
    server with per-user rights shows a session that may not write them).
    """

    VARS = {"x": (1.5, "Double"), "f": (2.5, "Float"), "i": (-7, "Int16"), "u": (70000, "UInt32"),
            "b": (True, "Boolean"), "sp": (10.0, "Double")}

    def __init__(self, port: int = 0, secure: tuple[Path, Path] | None = None,
                 users: dict[str, str] | None = None, user_certs: tuple[Path, ...] = (),
                 viewers: frozenset[str] = frozenset(), user_read_only: tuple[str, ...] = ()) -> None:
        self.port = port or free_port()
        self.secure = secure
        self.users = users
        self.viewers = viewers
        self.user_read_only = user_read_only
        self.user_certs = user_certs
        self.server = None
        self.nodes: dict[str, object] = {}

    @property
    def url(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}"

    async def start(self) -> None:
        from asyncua import Server, ua
        from asyncua.crypto.permission_rules import SimpleRoleRuleset, User, UserRole
        from asyncua.server.user_managers import UserManager

        for name in ("asyncua.server", "asyncua.server.address_space", "asyncua.server.binary_server_asyncio",
                     "asyncua.server.uaprocessor", "asyncua.server.internal_session", "asyncua.server.server",
                     "asyncua.server.internal_server"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        users = self.users
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        cert_ders = {x509.load_der_x509_certificate(p.read_bytes()).public_bytes(Encoding.DER)
                     for p in self.user_certs}

        class _Users(UserManager):
            def get_user(self, iserver, username=None, password=None, certificate=None):  # type: ignore[no-untyped-def]
                if username is None and certificate is not None and cert_ders:
                    # (for a username token, certificate is the channel's application certificate)
                    return User(role=UserRole.User) if bytes(certificate) in cert_ders else None
                if users is None:
                    return User(role=UserRole.User)
                if username is not None and users.get(username) == password:
                    return User(role=UserRole.User, name=username)
                return None

        viewers = self.viewers
        write_request = ua.NodeId(ua.ObjectIds.WriteRequest_Encoding_DefaultBinary)

        class _Rules(SimpleRoleRuleset):
            def check_validity(self, user, action_type_id, body):  # type: ignore[no-untyped-def]
                if action_type_id == write_request and user is not None and user.name in viewers:
                    return False
                return super().check_validity(user, action_type_id, body)

        server = Server(user_manager=_Users())
        await server.init()
        server.set_endpoint(self.url)
        await server.set_application_uri("urn:edgewarden:test-server")
        if self.secure is not None:
            server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
                                        ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt],
                                       permission_ruleset=_Rules())
            await server.load_certificate(str(self.secure[0]))
            await server.load_private_key(str(self.secure[1]))
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity], permission_ruleset=_Rules())
        if users is not None:
            server.set_identity_tokens([ua.UserNameIdentityToken, ua.X509IdentityToken])
        idx = await server.register_namespace("urn:test")
        assert idx == 2
        obj = await server.nodes.objects.add_object(ua.NodeId("test", idx), "test")
        for name, (value, vtype) in self.VARS.items():
            node = await obj.add_variable(ua.NodeId(f"test.{name}", idx), name,
                                          ua.Variant(value, getattr(ua.VariantType, vtype)))
            await node.set_writable()
            if name in self.user_read_only:
                await node.write_attribute(ua.AttributeIds.UserAccessLevel, ua.DataValue(
                    ua.Variant(ua.AccessLevel.CurrentRead.mask, ua.VariantType.Byte)))
            self.nodes[name] = node
        await server.start()
        self.server = server

    async def set(self, name: str, value: object, status: object = None) -> None:
        from asyncua import ua

        node = self.nodes[name]
        vtype = getattr(ua.VariantType, self.VARS[name][1])
        dv = ua.DataValue(ua.Variant(value, vtype), StatusCode=status or ua.StatusCode(ua.StatusCodes.Good),
                          SourceTimestamp=datetime_now())
        await node.write_value(dv)  # type: ignore[attr-defined]

    async def get(self, name: str) -> object:
        return await self.nodes[name].read_value()  # type: ignore[attr-defined]

    async def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            await server.stop()


def datetime_now() -> object:
    import datetime

    return datetime.datetime.now(datetime.UTC)


async def opcua_certs(tmp: Path) -> dict[str, Path]:
    """Self-signed certificates for a test server, a second (wrong) server, and the client."""
    import socket

    from asyncua.crypto.cert_gen import setup_self_signed_certificate
    from cryptography.x509.oid import ExtendedKeyUsageOID

    host = socket.gethostname()
    out: dict[str, Path] = {}
    for role, uri, eku in (("server", "urn:edgewarden:test-server", ExtendedKeyUsageOID.SERVER_AUTH),
                           ("other", "urn:edgewarden:test-server", ExtendedKeyUsageOID.SERVER_AUTH),
                           ("client", "urn:edgewarden:client", ExtendedKeyUsageOID.CLIENT_AUTH)):
        key, cert = tmp / f"{role}.key.pem", tmp / f"{role}.der"
        await setup_self_signed_certificate(key, cert, uri, host, [eku],
                                            {"countryName": "CH", "organizationName": "edgewarden tests"})
        out[f"{role}_key"], out[f"{role}_cert"] = key, cert
    return out


class HangingProxy:
    """A TCP proxy in front of a server; ``hang()`` swallows traffic both ways (a hung
    server whose sockets stay open), ``resume()`` forwards again (new traffic only)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.hung = False
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    if not self.hung:
                        writer.write(data)
                        await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._writers.append(writer)
            if self.hung:
                while await reader.read(65536):
                    pass
                writer.close()
                return
            try:
                up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            except OSError:
                writer.close()
                return
            self._writers.append(up_w)
            await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))

        self._server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def hang(self) -> None:
        self.hung = True

    def resume(self) -> None:
        self.hung = False

    async def stop(self) -> None:
        await _close_server(self._server, self._writers)
