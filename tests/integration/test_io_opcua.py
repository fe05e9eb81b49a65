"""OPC UA client against an independent asyncua server: read/write, Bad status, restart
with subscriptions recreated, refused connections, and security (pinned certificate)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest
from asyncua import ua

from edgewarden.gateway.config import OpcUaConnection, TagSpec
from edgewarden.gateway.errors import TransportError
from edgewarden.gateway.io.opcua.transport import OpcUaTransport
from edgewarden.gateway.io.tags import Quality, Snapshot, TagMap
from edgewarden.gateway.io.transport import plan_writes
from edgewarden.simulators.peers import HangingProxy, HungServer, OpcUaServer, free_port, opcua_certs

TYPES = {"x": "double", "f": "float32", "i": "int16", "u": "uint32", "b": "bool", "sp": "double"}


def _tags() -> TagMap:
    specs = {n: TagSpec(connection="u", node=f"ns=2;s=test.{n}", datatype=t, writable=n in ("sp", "u"),  # type: ignore[arg-type]
                        range=(0.0, 100.0) if n == "sp" else None) for n, t in TYPES.items()}
    return TagMap(specs=specs, readable=tuple(specs), index={n: i for i, n in enumerate(specs)})


def _transport(url: str, **kw: object) -> OpcUaTransport:
    conn = OpcUaConnection(url=url, timeout_s=1.0, reconnect_min_s=0.05, reconnect_max_s=0.3, **kw)  # type: ignore[arg-type]
    return OpcUaTransport(_tags(), {"u": conn})


async def _no_missing(link: object) -> bool:
    return not link.sub.missing  # type: ignore[attr-defined]


async def _until(pred, timeout: float = 8.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not await pred():
        assert time.monotonic() < end, "condition not reached in time"
        await asyncio.sleep(0.05)


@pytest.mark.anyio
async def test_reads_writes_bad_status_and_silent_subscription() -> None:
    """One server for both modes (an asyncua server takes ~1 s to start)."""
    async def check_mode(srv: OpcUaServer, mode: str) -> None:
        t = _transport(srv.url, mode=mode, fallback_after_ms=300)
        tags = _tags()
        try:
            await t.connect()
            snap = Snapshot(len(tags.readable))
            await t.read(snap)
            assert snap.values.tolist() == [1.5, 2.5, -7.0, 70000.0, 1.0, 10.0]
            assert (snap.quality == Quality.GOOD).all()
            # the pre-encoded Read answers as asyncua's public read_attributes does
            link = t._links["u"]
            request, client = link.request, link.client
            assert request is not None and request.fast  # the asyncua version it was checked against
            fast = await request.read(client, 1.0)
            request.fast = False
            public = await request.read(client, 1.0)
            request.fast = True
            assert [(d.Value, d.StatusCode) for d in fast] == [(d.Value, d.StatusCode) for d in public]
            await t.write(plan_writes(tags.specs, ["sp", "u"]), [42.0, 5.0])
            assert await srv.get("sp") == 42.0 and await srv.get("u") == 5
            await srv.set("u", 70000)
            # refused before the wire: out of range, not writable
            with pytest.raises(TransportError, match="outside its valid range"):
                await t.write(plan_writes(tags.specs, ["sp"]), [101.0])
            assert await srv.get("sp") == 42.0
            with pytest.raises(Exception, match="not marked writable"):
                plan_writes(tags.specs, ["x"])
            await srv.set("x", 3.0, ua.StatusCode(ua.StatusCodes.BadSensorFailure))

            async def bad() -> bool:
                await t.read(snap)
                return bool(snap.quality[0] == Quality.BAD)
            await _until(bad)
            await srv.set("x", 1.5)

            async def good() -> bool:
                await t.read(snap)
                return bool(snap.quality[0] == Quality.GOOD and snap.values[0] == 1.5)
            await _until(good)
        finally:
            await t.close()
            await srv.set("sp", 10.0)

    async def silent_subscription(srv: OpcUaServer) -> None:
        """The server keeps the session but stops publishing: values still arrive, by polling."""
        t = _transport(srv.url, mode="subscribe", fallback_after_ms=200)
        snap = Snapshot(len(_tags().readable))
        link = t._links["u"]
        try:
            await t.connect()
            await t.read(snap)
            svc = srv.server.iserver.subscription_service  # type: ignore[union-attr]
            params = ua.SetPublishingModeParameters(PublishingEnabled=False,
                                                    SubscriptionIds=list(svc.subscriptions))
            await svc.set_publishing_mode(params)
            await srv.set("x", 6.25)
            polls_before = link.last_poll_mono

            async def delivered() -> bool:
                await t.read(snap)
                return bool(snap.values[0] == 6.25 and snap.quality[0] == Quality.GOOD)
            await _until(delivered, timeout=3.0)
            assert link.last_poll_mono > polls_before  # it came by the polling fallback
        finally:
            await t.close()

    async def from_the_cache(srv: OpcUaServer) -> None:
        """Subscribed, the cycle copies the notified values: the snapshot equals a poll's,
        and every tag counts as received at the subscription's last notification, changed
        or not."""
        sub = _transport(srv.url, mode="subscribe", fallback_after_ms=5000)
        poll = _transport(srv.url)
        s_sub, s_poll = Snapshot(len(_tags().readable)), Snapshot(len(_tags().readable))
        link = sub._links["u"]
        try:
            await sub.connect()
            await poll.connect()
            await _until(lambda: _no_missing(link))
            await sub.read(s_sub)
            polled = link.last_poll_mono  # the first read polls; the rest come from notifications
            for k, (name, value, status) in enumerate([("x", 4.5, None), ("i", -3, None),
                                                        ("f", 0.25, ua.StatusCode(ua.StatusCodes.UncertainLastUsableValue)),
                                                        ("x", 5.5, None)]):
                await srv.set(name, value, status)

            async def settled() -> bool:
                await sub.read(s_sub)
                # every tag, changed or not, is as fresh as the subscription's last sign of life
                alive = max(link.last_notify_mono, link.last_poll_mono)
                assert (s_sub.recv_mono == alive).all() and alive <= time.monotonic()
                await poll.read(s_poll)
                return bool(np.array_equal(s_sub.values, s_poll.values)
                            and np.array_equal(s_sub.quality, s_poll.quality) and s_sub.values[0] == 5.5)
            await _until(settled)
            assert s_sub.quality[1] == Quality.UNCERTAIN
            assert link.last_poll_mono == polled  # delivered by the subscription cache, not a poll
        finally:
            await sub.close()
            await poll.close()
            await srv.set("x", 1.5)
            await srv.set("i", -7)
            await srv.set("f", 2.5)

    srv = OpcUaServer()
    await srv.start()
    try:
        await check_mode(srv, "poll")
        await check_mode(srv, "subscribe")
        await silent_subscription(srv)
        await from_the_cache(srv)
    finally:
        await srv.stop()


@pytest.mark.anyio
async def test_restart_reconnects_and_recreates_subscriptions(restore_logging) -> None:  # noqa: ANN001
    import io
    import json

    from edgewarden.gateway.config import LoggingSection
    from edgewarden.gateway.logs import configure_logging

    log = io.StringIO()
    configure_logging(LoggingSection(format="json"), stream=log)
    srv = OpcUaServer()
    await srv.start()
    t = _transport(srv.url, mode="subscribe", fallback_after_ms=5000)
    tags = _tags()
    snap = Snapshot(len(tags.readable))
    link = t._links["u"]
    try:
        await t.connect()
        await t.read(snap)
        await srv.stop()

        async def down() -> bool:
            await t.read(snap)
            return not t.health()["u"].connected
        await _until(down)
        # never the last good value presented as fresh
        assert (snap.quality == Quality.NO_DATA).all() and bool(np.isnan(snap.values).all())
        await asyncio.sleep(0.8)  # reconnect attempts fail meanwhile (backoff 0.05 .. 0.3 s)
        srv2 = OpcUaServer(port=srv.port)
        await srv2.start()
        try:
            async def up() -> bool:
                await t.read(snap)
                return t.health()["u"].connected and bool((snap.quality == Quality.GOOD).all())
            await _until(up)
            assert t.health()["u"].reconnects >= 1
            # the subscription was recreated: a change arrives as a notification
            before = link.last_notify_mono
            await srv2.set("x", 9.5)

            async def notified() -> bool:
                await t.read(snap)
                return link.last_notify_mono > before and snap.values[0] == 9.5
            await _until(notified)
        finally:
            await t.close()
            await srv2.stop()
    finally:
        await t.close()
    # one line per transition, however many attempts failed in between
    links = [json.loads(line) for line in log.getvalue().splitlines()]
    links = [(r["event"], r["level"], r["link"]) for r in links if r["event"].startswith("link ")]
    assert links == [("link down", "error", "u"), ("link up", "warning", "u")], log.getvalue()


@pytest.mark.anyio
async def test_refused_or_hung_at_start_is_a_clear_error() -> None:
    t = _transport(f"opc.tcp://127.0.0.1:{free_port()}")
    with pytest.raises(TransportError, match="cannot reach PLC connection 'u'"):
        await t.connect()
    hung = HungServer()
    await hung.start()
    try:
        t = _transport(f"opc.tcp://127.0.0.1:{hung.port}")
        t._links["u"].spec = t._links["u"].spec.model_copy(update={"timeout_s": 0.3})
        with pytest.raises(TransportError, match="cannot reach PLC connection 'u'"):
            await t.connect()
    finally:
        await hung.stop()


@pytest.mark.anyio
async def test_security_pinned_certificate_password_and_refusals(tmp_path: Path) -> None:
    c = await opcua_certs(tmp_path)
    srv = OpcUaServer(secure=(c["server_cert"], c["server_key"]), users={"op": "s3cret"},
                      user_certs=(c["client_cert"],))
    await srv.start()
    plain = OpcUaServer()
    await plain.start()
    sec = {"certificate": c["client_cert"], "private_key": c["client_key"], "require_security": True}
    try:
        for policy in ("Basic256Sha256", "Aes256Sha256RsaPss"):
            t = _transport(srv.url, security_policy=policy, server_certificate=c["server_cert"],
                           username="op", password="s3cret", **sec)
            await t.connect()
            snap = Snapshot(len(_tags().readable))
            await t.read(snap)
            assert (snap.quality == Quality.GOOD).all()
            await t.write(plan_writes(_tags().specs, ["sp"]), [12.0])
            await t.close()
        # certificate identity: a known user certificate, then an unknown one
        t = _transport(srv.url, security_policy="Basic256Sha256", server_certificate=c["server_cert"],
                       user_certificate=c["client_cert"], user_private_key=c["client_key"], **sec)
        await t.connect()
        await t.close()
        t = _transport(srv.url, security_policy="Basic256Sha256", server_certificate=c["server_cert"],
                       user_certificate=c["other_cert"], user_private_key=c["other_key"], **sec)
        with pytest.raises(TransportError, match="refused"):
            await t.connect()
        # wrong pinned certificate
        t = _transport(srv.url, security_policy="Basic256Sha256", server_certificate=c["other_cert"],
                       username="op", password="s3cret", **sec)
        with pytest.raises(TransportError, match="is not the pinned one"):
            await t.connect()
        # wrong password
        t = _transport(srv.url, security_policy="Basic256Sha256", server_certificate=c["server_cert"],
                       username="op", password="wrong", **sec)
        with pytest.raises(TransportError, match="refused the username/password"):
            await t.connect()
        # a NoSecurity-only server when security is required
        t = _transport(plain.url, security_policy="Basic256Sha256", server_certificate=c["server_cert"], **sec)
        with pytest.raises(TransportError, match="does not offer Basic256Sha256 with SignAndEncrypt"):
            await t.connect()
        # a client without security against a secure-only server
        t = _transport(srv.url, username="op", password="s3cret")
        with pytest.raises(TransportError, match="no endpoint without security"):
            await t.connect()
    finally:
        await srv.stop()
        await plain.stop()


def test_unpinned_security_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="pinned"):
        OpcUaConnection(url="opc.tcp://127.0.0.1:4840", security_policy="Basic256Sha256", certificate=Path("c"),
                        private_key=Path("k"))
    with pytest.raises(ValueError, match="require_security"):
        OpcUaConnection(url="opc.tcp://127.0.0.1:4840", require_security=True)


@pytest.mark.anyio
@pytest.mark.parametrize("mode", [pytest.param("poll", marks=pytest.mark.slow), "subscribe"])
async def test_hung_server_mid_run(mode: str) -> None:
    srv = OpcUaServer()
    await srv.start()
    proxy = HangingProxy(srv.port)
    await proxy.start()
    t = _transport(f"opc.tcp://127.0.0.1:{proxy.port}", mode=mode, fallback_after_ms=200)
    t._links["u"].spec = t._links["u"].spec.model_copy(update={"timeout_s": 0.4})
    snap = Snapshot(len(_tags().readable))
    try:
        await t.connect()
        await t.read(snap)
        assert (snap.quality == Quality.GOOD).all()
        proxy.hang()
        t0 = time.monotonic()

        async def stale() -> bool:
            await t.read(snap)
            assert time.monotonic() - t0 < 3.0
            return bool((snap.quality == Quality.NO_DATA).all())
        await _until(stale, timeout=3.0)
        assert bool(np.isnan(snap.values).all())
        proxy.resume()

        async def back() -> bool:
            await t.read(snap)
            return bool((snap.quality == Quality.GOOD).all())
        await _until(back)
        assert t.health()["u"].reconnects >= 1
    finally:
        await t.close()
        await proxy.stop()
        await srv.stop()


@pytest.mark.anyio
async def test_the_cycle_deadline_bounds_a_hung_request_and_keeps_the_session() -> None:
    """A read to a hung server costs the cycle no more than its deadline, not the
    library's timeout (1 s): the values keep their last answer and its receive time (the
    checks judge their age), the read goes on (counted late), the session is kept until
    ``timeout_s`` of silence, then dropped (NO_DATA); a write reports its tags as not
    acknowledged by its deadline."""
    from edgewarden.gateway.io.transport import WriteError, plan_writes

    srv = OpcUaServer()
    await srv.start()
    proxy = HangingProxy(srv.port)
    await proxy.start()
    t = _transport(f"opc.tcp://127.0.0.1:{proxy.port}")  # timeout_s 1.0
    snap = Snapshot(len(_tags().readable))
    plan = plan_writes(_tags().specs, ["sp"])
    try:
        await t.connect()
        await t.read(snap, time.monotonic() + 0.05)
        assert (snap.quality == Quality.GOOD).all()
        answered = snap.recv_mono.copy()
        proxy.hang()
        for _ in range(3):
            t0 = time.monotonic()
            await t.read(snap, t0 + 0.05)
            assert time.monotonic() - t0 < 0.2  # the deadline, not the 1 s request timeout
            assert (snap.recv_mono == answered).all()  # the last answer, as old as it is
        h = t.health()["u"]
        assert h.connected and h.late >= 3
        t0 = time.monotonic()
        with pytest.raises(WriteError) as err:
            await t.write(plan, [12.0], t0 + 0.05)
        assert time.monotonic() - t0 < 0.2 and err.value.outcomes == ["timeout"]
        await asyncio.sleep(1.0)  # past timeout_s of silence: the read that went on ends, the link is dropped
        await t.read(snap, time.monotonic() + 0.05)
        assert not t.health()["u"].connected and t.health()["u"].state == "reconnecting"
        assert (snap.quality == Quality.NO_DATA).all() and np.isnan(snap.values).all()
    finally:
        await t.close()
        await proxy.stop()
        await srv.stop()
