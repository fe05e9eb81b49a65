"""Certificates as commands: ``certs create`` makes the client's application certificate,
``certs pin`` fetches the server's; with them the gateway reaches AUTO on the secured twin
(Basic256Sha256, SignAndEncrypt, a username), without an openssl command. Expiry shows in
``config check`` and the metrics."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import pytest

from edgewarden.data import MODELS
from edgewarden.gateway.app import Gateway
from edgewarden.gateway.certs.files import read_info
from edgewarden.gateway.cli import main
from edgewarden.gateway.config import load_config
from edgewarden.simulators.harness import wait_for
from edgewarden.simulators.opcua_server import OpcUaSecurity
from edgewarden.simulators.twin import Twin
from tests.helpers import write_config


def secured(tmp: Path, url: str, certs: Path, server: Path) -> Path:
    return write_config(tmp, policy=MODELS / "cstr_baseline.onnx", url=url, replace={
        r"^timeout_s = 2.0": (f'timeout_s = 2.0\nsecurity_policy = "Basic256Sha256"\n'
                              f'certificate = "{certs / "edgewarden-client.der"}"\n'
                              f'private_key = "{certs / "edgewarden-client-key.pem"}"\n'
                              f'server_certificate = "{server}"\nusername = "op"\npassword = "s3cret"')})


@pytest.mark.anyio
async def test_create_and_pin_reach_auto_with_sign_and_encrypt(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    certs = tmp_path / "certs"
    assert main(["certs", "create", "--out-dir", str(certs)]) == 0
    out = capsys.readouterr().out
    assert "URI          urn:edgewarden:client" in out and 'application_uri = "urn:edgewarden:client"' in out
    key = certs / "edgewarden-client-key.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    assert read_info(certs / "edgewarden-client.der").sha256 == read_info(certs / "edgewarden-client.pem").sha256
    sec = OpcUaSecurity(tmp_path / "server", {"op": "s3cret"})
    async with Twin("cstr", modbus=None, security=sec) as twin:
        server = tmp_path / "server.der"
        assert await asyncio.to_thread(main, ["certs", "pin", twin.opcua_url, "-o", str(server)]) == 1
        assert "then run again with --yes" in capsys.readouterr().err  # no terminal to confirm on
        assert not server.exists()
        assert await asyncio.to_thread(main, ["certs", "pin", twin.opcua_url, "-o", str(server), "--yes"]) == 0
        out = capsys.readouterr().out
        assert "Basic256Sha256/SignAndEncrypt" in out and f"SHA-256      {read_info(server).fingerprint()}" in out
        assert "urn:edgewarden:twin:cstr" in out
        config = secured(tmp_path, twin.opcua_url, certs, server)
        assert main(["config", "check", str(config)]) == 0, capsys.readouterr().err
        assert "warning" not in capsys.readouterr().err
        gw = Gateway(load_config(config))
        task = asyncio.create_task(gw.run())
        try:
            await wait_for(lambda: gw.loop is not None and gw.loop.modes.mode.name == "READY", "READY, secured")
            gw.loop.request_start("certs test")
            await wait_for(lambda: float(twin.plc.image["feed_flow_sp"]) == 100.0, "policy writes at the twin")
            assert gw.loop.modes.mode.name == "AUTO"
            with urllib.request.urlopen(f"http://127.0.0.1:{gw.metrics_port}/metrics", timeout=5) as r:
                metrics = r.read().decode()
            line = next(ln for ln in metrics.splitlines() if ln.startswith(
                'edgewarden_certificate_expiry_seconds{key="connections.plc1.certificate"}'))
            assert 729 * 86400 < float(line.split()[-1]) <= 730 * 86400
        finally:
            gw.request_stop()
            await asyncio.wait_for(task, 15)


@pytest.mark.anyio
async def test_expiry_warnings_and_a_server_without_security(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    certs = tmp_path / "certs"
    assert main(["certs", "create", "--out-dir", str(certs), "--days", "10"]) == 0
    capsys.readouterr()
    async with Twin("cstr", modbus=None) as twin:  # no security at all
        assert await asyncio.to_thread(main, ["certs", "pin", twin.opcua_url, "--yes",
                                              "-o", str(tmp_path / "s.der")]) == 1
        assert "offers no SignAndEncrypt endpoint (it offers None/None)" in capsys.readouterr().err
        config = secured(tmp_path, twin.opcua_url, certs, certs / "edgewarden-client.der")
        assert main(["config", "check", str(config)]) == 0
        err = capsys.readouterr().err
        assert "connections.plc1.certificate: " in err and "(in 9 days): renew it before then" in err


@pytest.mark.parametrize("days", ["0", "100000000"])
def test_certs_create_refuses_a_validity_no_certificate_can_hold(tmp_path: Path, days: str,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["certs", "create", "--out-dir", str(tmp_path / "keys"), "--days", days]) == 78
    err = capsys.readouterr().err
    assert "--days must be between 1 and 36500" in err and "Traceback" not in err
