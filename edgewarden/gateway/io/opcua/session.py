"""Opening an OPC UA session as the config says: security policy and certificates, the
user identity, the endpoint check before a secure handshake, a bounded connect. The
transport opens its links with it, and ``discover`` browses with it, so both log in the
same way."""

from __future__ import annotations

import asyncio

from asyncua import Client, ua

from edgewarden.gateway.errors import TransportError
from edgewarden.gateway.io.opcua.connection import OpcUaConnection, credential
from edgewarden.gateway.io.opcua.security import POLICIES, check_endpoint, refusal
from edgewarden.gateway.io.link import describe


async def open_client(name: str, spec: OpcUaConnection) -> Client:
    """A connected client for connection ``name``; a refusal is a TransportError that says why."""
    client = Client(url=spec.url, timeout=spec.timeout_s)
    client.application_uri = spec.application_uri
    try:
        if spec.security_policy != "None":
            await client.set_security(
                POLICIES[spec.security_policy], certificate=str(spec.certificate),
                private_key=str(spec.private_key), server_certificate=str(spec.server_certificate),
                mode=ua.MessageSecurityMode.SignAndEncrypt)
        if spec.username is not None:
            client.set_user(spec.username)
            client.set_password(credential(spec.password_credential, f"connections.{name}.password_credential")
                                if spec.password_credential is not None else (spec.password or ""))
        if spec.user_certificate is not None:
            await client.load_client_certificate(str(spec.user_certificate))
            await client.load_private_key(str(spec.user_private_key))
    except (OSError, ValueError) as exc:
        raise TransportError(f"OPC UA connection {name!r}: cannot load its certificates or keys: "
                             f"{describe(exc)}") from None
    if spec.security_policy != "None":
        await check_endpoint(name, spec)
    try:
        await asyncio.wait_for(client.connect(), timeout=spec.timeout_s * 2)
    except ua.UaStatusCodeError as exc:
        await close_quietly(client)
        raise TransportError(refusal(name, spec, exc)) from None
    except BaseException:
        await close_quietly(client)
        raise
    return client


async def close_quietly(client: Client) -> None:
    try:
        await asyncio.wait_for(client.disconnect(), timeout=0.5)
    except Exception:  # noqa: BLE001 - a dropped or never-established session; nothing to save
        pass
