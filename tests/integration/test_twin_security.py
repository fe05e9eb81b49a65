"""A secured twin (Basic256Sha256 SignAndEncrypt, username users) against a plain asyncua
client: the right password works, a wrong one, anonymous and unsecured are refused, and a
viewer may read but not write."""

from __future__ import annotations

from pathlib import Path

import pytest
from asyncua import Client, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from cryptography.x509.oid import ExtendedKeyUsageOID

from edgewarden.simulators.opcua_server import OpcUaSecurity, TwinOpcUaServer
from edgewarden.simulators.twin import Twin

CLIENT_URI = "urn:edgewarden:test-client"


@pytest.mark.anyio
async def test_security_users_and_refusals(tmp_path: Path) -> None:
    ckey, ccert = tmp_path / "client_key.pem", tmp_path / "client_cert.der"
    await setup_self_signed_certificate(ckey, ccert, CLIENT_URI, "localhost",
                                        [ExtendedKeyUsageOID.CLIENT_AUTH], {})
    sec = OpcUaSecurity(tmp_path / "server", {"op": "s3cret", "ro": "look"},
                        frozenset({"ro"}))
    async with Twin("hvac", modbus=None, security=sec) as twin:
        server_key, server_cert = TwinOpcUaServer.certificate_paths(sec.cert_dir)
        assert server_cert.is_file()
        assert server_key.stat().st_mode & 0o777 == 0o600  # the private key: its owner only

        def client(user: str | None, password: str | None) -> Client:
            c = Client(twin.opcua_url, timeout=5)
            c.application_uri = CLIENT_URI
            if user is not None:
                c.set_user(user)
                c.set_password(password)
            return c

        async def secure(c: Client) -> Client:
            await c.set_security(SecurityPolicyBasic256Sha256, certificate=str(ccert),
                                 private_key=str(ckey), server_certificate=str(server_cert),
                                 mode=ua.MessageSecurityMode.SignAndEncrypt)
            return c

        sp = "ns=2;s=hvac.T_zone_sp"
        async with await secure(client("op", "s3cret")) as c:
            assert await c.get_node("ns=2;s=hvac.T_zone").read_value() > 0
            await c.get_node(sp).write_value(22.5)
            assert twin.plc.image["T_zone_sp"] == 22.5
            endpoints = await c.get_endpoints()
            assert {e.SecurityMode for e in endpoints} == {
                ua.MessageSecurityMode.SignAndEncrypt}
        async with await secure(client("ro", "look")) as c:
            assert await c.get_node(sp).read_value() == 22.5
            with pytest.raises(ua.UaStatusCodeError):
                await c.get_node(sp).write_value(25.0)
        assert twin.plc.image["T_zone_sp"] == 22.5
        for user, password in (("op", "wrong"), ("nobody", "s3cret"), (None, None)):
            with pytest.raises(Exception):  # noqa: B017 - refused at ActivateSession
                async with await secure(client(user, password)):
                    pass
        with pytest.raises(Exception):  # noqa: B017 - no unsecured endpoint
            async with client("op", "s3cret"):
                pass
