"""What an OPC UA server presents: its endpoints' certificate, fetched with GetEndpoints
(the one request a server answers before any security), for a person to compare with the
server's own record (trust on first use) and pin in ``server_certificate``."""

from __future__ import annotations

import asyncio

from asyncua import Client, ua

from edgewarden.gateway.errors import GatewayError
from edgewarden.gateway.io.opcua.security import POLICIES, leaf_der, offered_endpoints


async def fetch(url: str, policy: str | None, timeout_s: float) -> tuple[bytes, list[str]]:
    """(the leaf certificate, DER; the secure endpoints offered, as POLICY/MODE)."""
    client = Client(url=url, timeout=timeout_s)
    try:
        endpoints = await asyncio.wait_for(client.connect_and_get_server_endpoints(), timeout=timeout_s * 2)
    except (TimeoutError, OSError, ua.UaError) as exc:
        raise GatewayError(f"certs pin: no answer from {url}: {type(exc).__name__}: {exc}") from None
    secure = [e for e in endpoints if e.SecurityMode == ua.MessageSecurityMode.SignAndEncrypt
              and (policy is None or e.SecurityPolicyUri == POLICIES[policy].URI)]
    offered = offered_endpoints(endpoints)
    certs = {leaf_der(e.ServerCertificate) for e in secure} - {b""}
    if not certs:
        raise GatewayError(f"certs pin: {url} offers no SignAndEncrypt endpoint"
                           + (f" with {policy}" if policy else "") + f" (it offers {', '.join(offered) or 'none'})")
    if len(certs) > 1:
        raise GatewayError(f"certs pin: {url} presents {len(certs)} different certificates on its secure "
                           "endpoints; choose one with --policy")
    return certs.pop(), offered
