"""The systemd unit (verify, security exposure ≤ 2.0) and `edgewarden service install`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgewarden.gateway.cli import main
from edgewarden.gateway.config import load_config
from edgewarden.gateway.errors import ConfigError
from edgewarden.gateway.ops.service import install
from tests.helpers import EXAMPLE

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed "
                                   "(Debian: apt-get install systemd)")


def _installed(root: Path, realtime: bool = False) -> Path:
    install(EXAMPLE, root=root, executable=Path(sys.executable), realtime=realtime)
    return root / "etc" / "systemd" / "system" / "edgewarden.service"


def test_install_places_unit_config_and_model(tmp_path: Path) -> None:
    unit = _installed(tmp_path)
    text = unit.read_text()
    assert f"ExecStart={sys.executable} run --config /etc/edgewarden/gateway.toml" in text
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "RestartPreventExitStatus=78",
                 "StartLimitBurst=", "StateDirectory=edgewarden", "User=edgewarden", "ProtectSystem=strict",
                 "NoNewPrivileges=yes", "CapabilityBoundingSet=\n", "RestrictAddressFamilies=", "SystemCallFilter="):
        assert line in text, line
    cfg = tmp_path / "etc" / "edgewarden" / "gateway.toml"
    s = load_config(cfg).settings
    assert s.policy.path == tmp_path / "etc" / "edgewarden" / "models" / "cstr_baseline.onnx"
    assert s.policy.path.read_bytes() == (EXAMPLE.parent / "../models/cstr_baseline.onnx").read_bytes()
    assert s.audit.dir == Path("/var/lib/edgewarden/audit")
    assert s.control.socket == Path("/run/edgewarden/control.sock")
    assert oct(cfg.stat().st_mode & 0o777) == "0o640"


def test_install_refuses_to_overwrite_and_bad_configs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _installed(tmp_path)
    with pytest.raises(ConfigError, match="--force"):
        install(EXAMPLE, root=tmp_path, executable=Path(sys.executable))
    install(EXAMPLE, root=tmp_path, executable=Path(sys.executable), force=True)
    assert (tmp_path / "etc" / "edgewarden" / "gateway.toml.bak").exists()
    bad = tmp_path / "bad.toml"
    bad.write_text(EXAMPLE.read_text().replace("cycle_hz = 10.0", "cycle_hz = -1"))
    assert main(["service", "install", "-c", str(bad), "--root", str(tmp_path / "r2")]) == 78
    assert "gateway.cycle_hz" in capsys.readouterr().err
    assert not (tmp_path / "r2" / "etc").exists()  # a bad config installs nothing


def test_user_groups_and_modes_keep_keys_from_operators(tmp_path: Path) -> None:
    """--user is honoured; the keys and the config are readable by the service's own group
    only; operators get a group of their own that opens the socket (and nothing else)."""
    install(EXAMPLE, root=tmp_path, user="plantgw", operators_group="plant-ops", executable=Path(sys.executable))
    unit = (tmp_path / "etc" / "systemd" / "system" / "edgewarden.service").read_text()
    assert "\nUser=plantgw\n" in unit and "\nGroup=plantgw\n" in unit and "User=edgewarden" not in unit
    assert "\nSupplementaryGroups=plant-ops\n" in unit  # so the daemon can give the socket to it
    assert "\nPrivateUsers=yes" not in unit  # it maps every other uid to nobody: identity lost
    assert "RuntimeDirectoryMode=0755" in unit
    cfg = load_config(tmp_path / "etc" / "edgewarden" / "gateway.toml").settings
    assert cfg.control.operators_group == "plant-ops"
    lines = main_lines(["service", "install", "-c", str(EXAMPLE), "--root", str(tmp_path / "dry"), "--user", "plantgw",
                        "--operators-group", "plant-ops", "--executable", sys.executable, "--dry-run"])
    assert not (tmp_path / "dry").exists()  # a dry run writes nothing
    assert "dry run: nothing was written" in lines
    assert any(line.startswith("would place file ") and "/etc/edgewarden/models/cstr_baseline.onnx 0640 root:plantgw"
               in line for line in lines.splitlines()), lines
    assert "/etc/edgewarden/gateway.toml 0640 root:plantgw" in lines
    assert "plant-ops" not in " ".join(ln for ln in lines.splitlines() if "/etc/edgewarden" in ln)


def main_lines(argv: list[str]) -> str:
    out = subprocess.run([sys.executable, "-m", "edgewarden.gateway.cli", *argv], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_install_is_all_or_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import edgewarden.gateway.ops.service as service

    # the unit file missing (a wheel without it): refused before anything is placed
    monkeypatch.setattr(service, "UNIT_DIR", tmp_path / "nowhere")
    with pytest.raises(Exception, match="unit file"):
        install(EXAMPLE, root=tmp_path / "a", executable=Path(sys.executable))
    assert not (tmp_path / "a").exists()
    monkeypatch.undo()
    # something in the way (the systemd directory is a file): refused before anything is placed
    (tmp_path / "b" / "etc" / "systemd").mkdir(parents=True)
    (tmp_path / "b" / "etc" / "systemd" / "system").write_text("not a directory")
    with pytest.raises(ConfigError, match="in the way"):
        install(EXAMPLE, root=tmp_path / "b", executable=Path(sys.executable))
    assert not (tmp_path / "b" / "etc" / "edgewarden").exists()
    # the disk failing while the last file is placed (injected: root ignores permissions here)
    # undoes everything: a fresh install leaves nothing, a reinstall the old files
    real_replace = os.replace

    def failing_replace(src: object, dst: object) -> None:
        if Path(str(src)).name == ".edgewarden.service.new":  # the new unit into place
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    _installed(tmp_path / "c")
    before = {p: p.read_bytes() for p in (tmp_path / "c").rglob("*") if p.is_file()}
    monkeypatch.setattr(service.os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space"):
        install(EXAMPLE, root=tmp_path / "d", executable=Path(sys.executable))
    assert not (tmp_path / "d" / "etc" / "edgewarden").exists()
    with pytest.raises(OSError, match="No space"):
        install(EXAMPLE.parent / "cstr_learned.toml", root=tmp_path / "c", executable=Path(sys.executable), force=True)
    monkeypatch.undo()
    assert {p: p.read_bytes() for p in (tmp_path / "c").rglob("*") if p.is_file()} == before


def test_uninstall_removes_the_service_and_keeps_the_audit_log(tmp_path: Path) -> None:
    _installed(tmp_path, realtime=True)
    audit = tmp_path / "var" / "lib" / "edgewarden" / "audit"
    audit.mkdir(parents=True)
    (audit / "0000000001.seg").write_bytes(b"evidence")
    lines = main_lines(["service", "uninstall", "--root", str(tmp_path), "--dry-run"])
    assert (tmp_path / "etc" / "edgewarden").exists() and "would remove" in lines
    lines = main_lines(["service", "uninstall", "--root", str(tmp_path)])
    assert not (tmp_path / "etc" / "edgewarden").exists()
    assert not (tmp_path / "etc" / "systemd" / "system" / "edgewarden.service").exists()
    assert not (tmp_path / "etc" / "systemd" / "system" / "edgewarden.service.d").exists()
    assert (audit / "0000000001.seg").read_bytes() == b"evidence" and "kept" in lines


@pytest.mark.anyio
async def test_the_socket_belongs_to_the_operators_group(tmp_path: Path) -> None:
    import grp
    import os

    from edgewarden.gateway.ops.control import ControlServer, Operators

    group = grp.getgrgid(1).gr_name if os.getuid() == 0 else grp.getgrgid(os.getgid()).gr_name
    server = ControlServer(tmp_path / "c.sock", {}, operators=Operators(group=group))
    await server.start()
    try:
        st = (tmp_path / "c.sock").stat()
        assert st.st_gid == grp.getgrnam(group).gr_gid and st.st_mode & 0o777 == 0o660
    finally:
        await server.close()


@needs_analyze
def test_the_realtime_drop_in_allows_the_scheduling_calls(tmp_path: Path) -> None:
    """cpu_affinity / realtime_priority make sched_setaffinity / sched_setscheduler, which
    the unit's filter denies; the drop-in must allow them (systemd-analyze says which)."""
    for realtime in (False, True):
        unit = _installed(tmp_path / str(realtime), realtime=realtime)
        sec = subprocess.run([ANALYZE, "security", "--offline=true", str(unit)], capture_output=True, text=True,
                             timeout=60).stdout
        assert ("sched_setaffinity is allowed" in sec) is realtime, sec


@needs_analyze
@pytest.mark.parametrize("realtime", [False, True])
def test_unit_verifies_and_exposure_at_most_1_5(tmp_path: Path, realtime: bool) -> None:
    unit = _installed(tmp_path, realtime=realtime)
    if realtime:  # systemd-analyze reads drop-ins beside the unit file it is given
        assert (unit.parent / "edgewarden.service.d" / "realtime.conf").exists()
    verify = subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    sec = subprocess.run([ANALYZE, "security", "--offline=true", str(unit)], capture_output=True, text=True,
                         timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", sec.stdout)
    assert m, sec.stdout + sec.stderr
    assert float(m.group(1)) <= 1.5, sec.stdout


@needs_analyze
def test_a_password_credential_is_loaded_by_systemd(tmp_path: Path) -> None:
    """The OPC UA password never sits in the config or the environment: the unit loads it
    as a credential from a root-only file that install can place."""
    config = tmp_path / "src" / "gateway.toml"
    config.parent.mkdir()
    config.write_text(EXAMPLE.read_text().replace('url = "opc.tcp://127.0.0.1:4840"',
                                                  'url = "opc.tcp://127.0.0.1:4840"\nusername = "gw"\n'
                                                  'password_credential = "plc1-password"'))
    for f in ("../models/cstr_baseline.onnx",):
        (tmp_path / "models").mkdir(exist_ok=True)
        (tmp_path / "models" / "cstr_baseline.onnx").write_bytes((EXAMPLE.parent / f).read_bytes())
    secret = tmp_path / "pw.txt"
    secret.write_text("s3cret\n")
    with pytest.raises(ConfigError, match="no such password_credential"):
        install(config, root=tmp_path / "r", executable=Path(sys.executable), credentials={"other": secret})
    lines = install(config, root=tmp_path / "r", executable=Path(sys.executable),
                    credentials={"plc1-password": secret})
    unit = tmp_path / "r" / "etc" / "systemd" / "system" / "edgewarden.service"
    assert "\nLoadCredential=plc1-password:/etc/edgewarden/credentials/plc1-password\n" in unit.read_text()
    placed = tmp_path / "r" / "etc" / "edgewarden" / "credentials" / "plc1-password"
    assert placed.read_text() == "s3cret\n" and placed.stat().st_mode & 0o777 == 0o600
    assert (placed.parent.stat().st_mode & 0o777) == 0o700 and not any("put the password" in ln for ln in lines)
    assert "s3cret" not in (tmp_path / "r" / "etc" / "edgewarden" / "gateway.toml").read_text()
    verify = subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    lines = install(config, root=tmp_path / "r2", executable=Path(sys.executable))  # no file given: say where
    assert any("put the password in /etc/edgewarden/credentials/plc1-password" in ln for ln in lines), lines


SERVE = """
import asyncio, os, sys
from pathlib import Path
from edgewarden.gateway.ops.control import ControlServer

async def main():
    async def status(req):
        return {"peer_uid": req.get("uid")}
    server = ControlServer(Path(sys.argv[1]), {"status": status})
    await server.start()
    os.chmod(sys.argv[1], 0o666)
    print("ready", flush=True)
    await asyncio.sleep(30)

asyncio.run(main())
"""
ASK = ("import json, socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
       "s.sendall(b'{\"cmd\": \"status\"}\\n'); print(json.loads(s.makefile().readline())['peer_uid'])")


@pytest.mark.skipif(os.getuid() != 0 or not (shutil.which("unshare") and shutil.which("setpriv")),
                    reason="needs root, unshare and setpriv (util-linux)")
@pytest.mark.parametrize("namespace", [False, True])
def test_operator_identity_survives_only_outside_a_user_namespace(tmp_path: Path, namespace: bool) -> None:
    """What PrivateUsers=yes would do: the daemon in its own user namespace (as systemd
    makes it, only its own uid mapped) sees every other caller as 65534, so the socket
    cannot tell operators apart. The shipped unit has no PrivateUsers= (checked above);
    here the daemon's own control server, in a namespace and not, and a caller of uid 1000."""
    import tempfile

    sockdir = Path(tempfile.mkdtemp(prefix="edgewarden-ns-"))  # pytest's tmp dirs are 0700 to others
    sockdir.chmod(0o755)
    sock = sockdir / "c.sock"
    cmd = [sys.executable, "-c", SERVE, str(sock)]
    if namespace:
        cmd = ["unshare", "--user", "--map-root-user", *cmd]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[3])
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        asked = subprocess.run(["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", sys.executable, "-c", ASK,
                                str(sock)], capture_output=True, text=True, timeout=30)
        assert asked.returncode == 0, asked.stderr
        assert int(asked.stdout) == (65534 if namespace else 1000)
    finally:
        server.kill()
        server.communicate(timeout=10)
        shutil.rmtree(sockdir)
