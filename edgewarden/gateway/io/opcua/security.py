"""Before a secure OPC UA session: the server must offer our policy with SignAndEncrypt
and present exactly the pinned certificate; and clear words for a server that refused us."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from asyncua import Client, ua
from asyncua.crypto import uacrypto
from asyncua.crypto.security_policies import SecurityPolicyAes256Sha256RsaPss, SecurityPolicyBasic256Sha256
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from edgewarden.gateway.errors import ConfigError, TransportError
from edgewarden.gateway.io.opcua.connection import OpcUaConnection
from edgewarden.gateway.readfile import read_regular

POLICIES = {"Basic256Sha256": SecurityPolicyBasic256Sha256, "Aes256Sha256RsaPss": SecurityPolicyAes256Sha256RsaPss}
_HINTS = {
    "BadUserAccessDenied": "the server refused the username/password or user certificate",
    "BadIdentityTokenInvalid": "the server refused the identity token",
    "BadIdentityTokenRejected": "the server refused the identity (wrong username or password?)",
    "BadSecurityPolicyRejected": "the server does not offer this security policy",
    "BadCertificateUntrusted": "the server does not trust our certificate",
    "BadSecurityChecksFailed": "security checks failed (certificate or policy mismatch)",
}


CERT_MAX_BYTES = 2**20  # a certificate (or a PEM bundle of them): a few KiB


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """The certificates in PEM (a bundle may hold several) or DER bytes; ValueError if none."""
    if data.lstrip().startswith(b"-----"):
        return x509.load_pem_x509_certificates(data)
    return [x509.load_der_x509_certificate(data)]


def cert_der(path: Path | str) -> bytes:
    """A certificate file (PEM or DER) as DER (the first of a PEM bundle)."""
    data = read_regular(path, what="certificate", max_bytes=CERT_MAX_BYTES, error=ConfigError)
    return load_certificates(data)[0].public_bytes(Encoding.DER)


def leaf_der(chain: bytes | None) -> bytes:
    """The leaf of the DER certificate (chain) a server presents."""
    cert = uacrypto.x509_from_der(chain) if chain else None
    return b"" if cert is None else cert.public_bytes(Encoding.DER)  # type: ignore[no-any-return]


def thumbprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()[:16] if der else "none"


def identity(spec: OpcUaConnection) -> str:
    """The session's user identity, as an operator would name it."""
    if spec.username is not None:
        return f"user {spec.username!r}"
    if spec.user_certificate is not None:
        return f"the user certificate {spec.user_certificate}"
    return "the anonymous identity"


def refusal(name: str, spec: OpcUaConnection, exc: ua.UaStatusCodeError) -> str:
    """A clear message for a server that answered but refused us."""
    code = getattr(exc, "code", None)
    status = ua.StatusCode(code).name if code is not None else type(exc).__name__
    return f"OPC UA connection {name!r} to {spec.url}: {_HINTS.get(status, 'the server refused the session')} ({status})"


def offered_endpoints(endpoints: list[ua.EndpointDescription]) -> list[str]:
    """What a server offers, as POLICY/MODE (Basic256Sha256/SignAndEncrypt, None/None)."""
    return sorted({f"{e.SecurityPolicyUri.rsplit('#', 1)[-1]}/{e.SecurityMode.name.rstrip('_')}" for e in endpoints})


async def check_endpoint(name: str, spec: OpcUaConnection) -> None:
    """The server offers ``spec.security_policy`` with SignAndEncrypt and presents the pinned
    certificate; otherwise a clear refusal instead of a handshake that times out. (asyncua
    also checks the certificate in CreateSession.)"""
    probe = Client(url=spec.url, timeout=spec.timeout_s)
    endpoints = await asyncio.wait_for(probe.connect_and_get_server_endpoints(), timeout=spec.timeout_s * 2)
    uri = POLICIES[spec.security_policy].URI
    offered = offered_endpoints(endpoints)
    match = [e for e in endpoints
             if e.SecurityPolicyUri == uri and e.SecurityMode == ua.MessageSecurityMode.SignAndEncrypt]
    if not match:
        raise TransportError(
            f"OPC UA connection {name!r} to {spec.url}: refused: the server does not offer "
            f"{spec.security_policy} with SignAndEncrypt (it offers {', '.join(offered) or 'nothing'}); "
            "security is required, so the gateway will not connect without it")
    pinned = cert_der(spec.server_certificate)  # type: ignore[arg-type]
    presented = leaf_der(match[0].ServerCertificate)
    if presented != pinned:
        raise TransportError(
            f"OPC UA connection {name!r} to {spec.url}: refused: the server's certificate "
            f"(SHA-256 {thumbprint(presented)}) is not the pinned one in server_certificate "
            f"{spec.server_certificate} (SHA-256 {thumbprint(pinned)})")
