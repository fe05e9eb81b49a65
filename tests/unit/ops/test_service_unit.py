"""The systemd unit (verify, security exposure ≤ 2.0) and `edgewarden service install`."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.ops.service import install
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


@needs_analyze
@pytest.mark.parametrize("realtime", [False, True])
def test_unit_verifies_and_exposure_at_most_2(tmp_path: Path, realtime: bool) -> None:
    unit = _installed(tmp_path, realtime=realtime)
    if realtime:  # systemd-analyze reads drop-ins beside the unit file it is given
        assert (unit.parent / "edgewarden.service.d" / "realtime.conf").exists()
    verify = subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    sec = subprocess.run([ANALYZE, "security", "--offline=true", str(unit)], capture_output=True, text=True,
                         timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", sec.stdout)
    assert m, sec.stdout + sec.stderr
    assert float(m.group(1)) <= 2.0, sec.stdout
