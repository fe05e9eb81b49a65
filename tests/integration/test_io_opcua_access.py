"""An OPC UA identity that may not write what the gateway writes: refused at start with the
tags named where the server says so (UserAccessLevel), and where it only says so by refusing
the Write (asyncua's role rules), the session is kept (no reconnect storm), the writes are
not acknowledged and the reason is in the link's health."""

from __future__ import annotations

import pytest

from edgewarden.gateway.config import OpcUaConnection
from edgewarden.gateway.errors import AccessError
from edgewarden.gateway.io.opcua.transport import OpcUaTransport
from edgewarden.gateway.io.tags import Quality, Snapshot
from edgewarden.gateway.io.transport import WriteError, plan_writes
from edgewarden.simulators.peers import OpcUaServer
from tests.integration.test_io_opcua import _tags


def _transport(url: str, **kw: object) -> OpcUaTransport:
    conn = OpcUaConnection(url=url, timeout_s=1.0, reconnect_min_s=0.05, reconnect_max_s=0.3, **kw)  # type: ignore[arg-type]
    return OpcUaTransport(_tags(), {"u": conn})


@pytest.mark.anyio
async def test_an_identity_the_server_says_may_not_write_is_refused_at_start() -> None:
    srv = OpcUaServer(user_read_only=("sp",))
    await srv.start()
    try:
        t = _transport(srv.url)
        with pytest.raises(AccessError) as err:
            await t.connect()
        msg = str(err.value)
        assert "tags.sp node 'ns=2;s=test.sp'" in msg and "the anonymous identity" in msg, msg
        assert "tags.u " not in msg  # writable to this identity: not named
        assert err.value.exit_code == 78  # a configuration matter: systemd does not restart it
        assert not t.health()["u"].connected
    finally:
        await srv.stop()


@pytest.mark.anyio
async def test_a_write_refused_for_the_identity_keeps_the_session_and_is_not_acknowledged() -> None:
    srv = OpcUaServer(users={"op": "s3cret", "ro": "look"}, viewers=frozenset({"ro"}))
    await srv.start()
    try:
        t = _transport(srv.url, username="ro", password="look")
        await t.connect()  # this server's UserAccessLevel does not depend on the user
        plan = plan_writes(_tags().specs, ["sp"])
        for _ in range(3):
            with pytest.raises(WriteError) as err:
                await t.write(plan, [42.0])
            assert err.value.outcomes[0].startswith("failed: ") and "AccessDenied" in err.value.outcomes[0], \
                err.value.outcomes
        health = t.health()["u"]
        assert health.connected and health.reconnects == 0, health  # no reconnect storm
        assert "user 'ro'" in health.last_error and "sp" in health.last_error, health.last_error
        assert await srv.get("sp") == 10.0  # nothing was written
        snap = Snapshot(len(_tags().readable))
        await t.read(snap)
        assert (snap.quality == Quality.GOOD).all()  # the session still reads
        await t.close()

        ok = _transport(srv.url, username="op", password="s3cret")  # the same server, an operator identity
        await ok.connect()
        await ok.write(plan, [42.0])
        assert await srv.get("sp") == 42.0
        await ok.close()
    finally:
        await srv.stop()


@pytest.mark.anyio
async def test_the_password_comes_from_a_systemd_credential(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """password_credential: read from $CREDENTIALS_DIRECTORY (what systemd's LoadCredential=
    provides) at connect; without it, a configuration error naming the key."""
    from edgewarden.gateway.errors import ConfigError

    srv = OpcUaServer(users={"gw": "s3cret"})
    await srv.start()
    try:
        t = _transport(srv.url, username="gw", password_credential="plc-password")
        monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
        with pytest.raises(ConfigError, match=r"connections.u.password_credential = 'plc-password': \$CREDENTIALS"):
            await t.connect()
        (tmp_path / "plc-password").write_text("s3cret\n")
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
        t = _transport(srv.url, username="gw", password_credential="plc-password")
        await t.connect()
        assert t.health()["u"].connected
        await t.close()
        (tmp_path / "plc-password").write_text("wrong\n")
        with pytest.raises(Exception, match="refused"):
            await _transport(srv.url, username="gw", password_credential="plc-password").connect()
    finally:
        await srv.stop()
    with pytest.raises(ValueError, match="not both"):
        OpcUaConnection(url=srv.url, username="gw", password="x", password_credential="p")
