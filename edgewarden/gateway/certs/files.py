"""Certificate files: the gateway's own (made as OPC UA Part 6 wants an application
instance certificate: RSA 2048, SHA-256, the application URI in the SubjectAltName, key
usages for signing and encryption; asyncua's generator), what a certificate says, and
when the ones a config names expire."""

from __future__ import annotations

import datetime as dt
import hashlib
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from asyncua.crypto.cert_gen import dump_private_key_as_pem, generate_private_key, generate_self_signed_app_certificate
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from edgewarden.gateway.audit.files import write_file
from edgewarden.gateway.errors import ConfigError, GatewayError
from edgewarden.gateway.io.opcua.security import CERT_MAX_BYTES, load_certificates
from edgewarden.gateway.readfile import read_regular

if TYPE_CHECKING:
    from edgewarden.gateway.config import Settings

EXPIRY_WARNING_DAYS = 30
# the certificate keys of a connection, in the order config check reports them
CERT_KEYS = ("certificate", "server_certificate", "user_certificate", "ca_file")


@dataclass(frozen=True)
class CertInfo:
    subject: str
    issuer: str
    not_before: dt.datetime
    not_after: dt.datetime
    sha256: str  # of the DER, hex
    uris: list[str]

    def fingerprint(self) -> str:
        return ":".join(self.sha256[i:i + 2] for i in range(0, len(self.sha256), 2)).upper()

    def lines(self) -> list[str]:
        return [f"subject      {self.subject}", f"issuer       {self.issuer}",
                f"valid        {self.not_before:%Y-%m-%d %H:%M} to {self.not_after:%Y-%m-%d %H:%M} UTC",
                f"URI          {', '.join(self.uris) or 'none'}", f"SHA-256      {self.fingerprint()}"]


def load(data: bytes) -> x509.Certificate:
    """A certificate from PEM or DER bytes (the first one of a PEM chain)."""
    return load_certificates(data)[0]


def _read(path: Path) -> list[x509.Certificate]:
    """The certificates of a file; a ConfigError that names it when it cannot be read or parsed."""
    data = read_regular(path, what="certificate", max_bytes=CERT_MAX_BYTES, error=ConfigError)
    try:
        return load_certificates(data)
    except ValueError as exc:
        raise ConfigError(f"{path}: not a PEM or DER certificate ({exc})") from None


def info(cert: x509.Certificate) -> CertInfo:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    return CertInfo(cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(), cert.not_valid_before_utc,
                    cert.not_valid_after_utc, hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest(), uris)


def read_info(path: Path) -> CertInfo:
    return info(_read(path)[0])


@dataclass(frozen=True)
class Created:
    certificate_der: Path
    certificate_pem: Path
    private_key: Path
    info: CertInfo


MAX_DAYS = 36_500  # a certificate's not-after must stay a date X.509 (and Python) can hold


def create(out_dir: Path, *, uri: str, name: str, days: int, host: str | None = None,
           force: bool = False) -> Created:
    """The gateway's application instance certificate (DER and PEM) and its private key
    (PEM, 0600), self-signed, in ``out_dir``."""
    if not 1 <= days <= MAX_DAYS:
        raise ConfigError(f"certs create: --days must be between 1 and {MAX_DAYS} (100 years)")
    if not uri.strip() or ":" not in uri:
        raise ConfigError(f"certs create: --uri {uri!r} is not a URI (e.g. urn:edgewarden:client)")
    der, pem, key = out_dir / f"{name}.der", out_dir / f"{name}.pem", out_dir / f"{name}-key.pem"
    existing = [p for p in (der, pem, key) if p.exists()]
    if existing and not force:
        raise ConfigError(f"certs create: {', '.join(map(str, existing))} exist(s): --force replaces them "
                          "(the server must then trust the new certificate)")
    private_key = generate_private_key()
    cert = generate_self_signed_app_certificate(
        private_key, name, {}, [x509.UniformResourceIdentifier(uri), x509.DNSName(host or socket.gethostname())],
        extended=[ExtendedKeyUsageOID.CLIENT_AUTH], days=days)
    _write(key, dump_private_key_as_pem(private_key), 0o600)
    _write(der, cert.public_bytes(Encoding.DER), 0o644)
    _write(pem, cert.public_bytes(Encoding.PEM), 0o644)
    return Created(der, pem, key, info(cert))


def write_public(path: Path, data: bytes) -> None:
    """A certificate (public): 0644, written whole or not at all."""
    _write(path, data, 0o644)


def _write(path: Path, data: bytes, mode: int) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_file(path, data, mode)
    except OSError as exc:
        raise GatewayError(f"cannot write {path}: {exc.strerror or exc}") from None


def configured(s: Settings) -> list[tuple[str, Path]]:
    """(key path, file) of every certificate the config names."""
    return [(f"connections.{name}.{key}", path) for name, conn in s.connections.items()
            for key in CERT_KEYS if isinstance(path := getattr(conn, key, None), Path)]


def not_after(path: Path) -> dt.datetime:
    """When the first of the certificates in ``path`` (a PEM bundle may hold several) expires."""
    return min(c.not_valid_after_utc for c in _read(path))


def expiry_warnings(s: Settings, now: dt.datetime | None = None) -> list[str]:
    """A certificate that expires within EXPIRY_WARNING_DAYS, or has: the server (or we)
    will refuse the session then."""
    now = now or dt.datetime.now(dt.UTC)
    out = []
    for key, path in configured(s):
        try:
            after = not_after(path)
        except ConfigError as exc:
            out.append(f"{key}: {exc}")
            continue
        left = after - now
        if left <= dt.timedelta(0):
            out.append(f"{key}: {path} expired on {after:%Y-%m-%d}: the session will be refused; "
                       "renew it (edgewarden certs create / certs pin)")
        elif left <= dt.timedelta(days=EXPIRY_WARNING_DAYS):
            out.append(f"{key}: {path} expires on {after:%Y-%m-%d} (in {left.days} days): renew it before then")
    return out


def expiries(s: Settings) -> list[tuple[str, float]]:
    """(key path, not-after as a Unix time) of every readable certificate the config names."""
    out = []
    for key, path in configured(s):
        try:
            out.append((key, not_after(path).timestamp()))
        except ConfigError:
            continue  # unreadable: config check and the connection say so
    return out
