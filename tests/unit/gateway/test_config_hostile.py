"""Dangerous or malformed configuration, through ``edgewarden config check`` as a user
runs it (a real process): each refused with exit 78, the file (or the environment
variable) and the key named, and no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgewarden.data import MODELS
from edgewarden.gateway.audit.checkpoint import generate_keypair
from tests.helpers import write_config

ROOT = Path(__file__).resolve().parents[3]
POLICY = MODELS / "cstr_baseline.onnx"


def check(config: Path, env: dict[str, str] | None = None, cmd: str = "check") -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("EDGEWARDEN_")}
    args = ["config", "check", str(config)] if cmd == "check" else ["run", "--config", str(config)]
    r = subprocess.run([sys.executable, "-m", "edgewarden.gateway.cli", *args], capture_output=True, text=True,
                       env={**base, **(env or {})}, cwd=ROOT, timeout=60)
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    return r


@pytest.mark.parametrize("replace, says", [
    ({r"^comms_timeout_ms = 1000": "comms_timeout_ms = inf"}, "gateway.comms_timeout_ms: Input should be a finite number"),
    ({r"^comms_timeout_ms = 1000": "comms_timeout_ms = nan"}, "gateway.comms_timeout_ms: Input should be a finite number"),
    ({r"^comms_timeout_ms = 1000": "comms_timeout_ms = 1e300"}, "gateway.comms_timeout_ms: Input should be less than or equal to 60000"),
    ({r"^(stale_ms = )1000": r"\g<1>1e300"}, "tags.T.stale_ms: Input should be less than or equal to 600000"),
    ({r"^max_consecutive_overruns = 5": "max_consecutive_overruns = 1e23"}, "gateway.max_consecutive_overruns"),
    ({r"^auto_start = false": 'auto_start = "yes"'}, "gateway.auto_start: must be true or false"),
    ({r"^soft = \[320.0, 380.0\]": "soft = [280.0, 380.0]"}, "safety.limits.T: soft [280.0, 380.0] must lie within hard"),
    ({r'^node = "ns=2;s=cstr.CA"': 'node = "ns=2;s=cstr.T"'}, "tags.CA: reads the same source as tags.T"),
    ({r'^dir = ".*"': 'dir = ""'}, "audit.dir: must not be empty"),
    ({r'^node = "ns=2;s=cstr.CA"': 'node = "cstr.CA"'}, "tags.CA.node: node 'cstr.CA' is not an OPC UA NodeId"),
    ({r'^node = "ns=2;s=cstr.CA"': 'node = "ns=2;s="'}, "is not an OPC UA NodeId"),
    ({r'^socket = ".*"': 'socket = "' + "/tmp/" + "s" * 120 + '.sock"'}, "control.socket: /tmp/sss"),
])
def test_dangerous_values_are_refused_with_the_key(tmp_path: Path, replace: dict[str, str], says: str) -> None:
    r = check(write_config(tmp_path, policy=POLICY, replace=replace))
    assert r.returncode == 78 and says in r.stderr and str(tmp_path / "gateway.toml") in r.stderr, r.stderr


@pytest.mark.parametrize("env, says", [
    ({"EDGEWARDEN_AUDIT__DIR": ""}, "\n  EDGEWARDEN_AUDIT__DIR (environment): audit.dir: must not be empty"),
    ({"EDGEWARDEN_GATEWAY__AUTO_START": "yes"}, "\n  EDGEWARDEN_GATEWAY__AUTO_START (environment): gateway.auto_start: must "
                                                "be true or false"),
    ({"EDGEWARDEN_GATEWAY__COMMS_TIMEOUT_MS": "inf"}, "\n  EDGEWARDEN_GATEWAY__COMMS_TIMEOUT_MS (environment): "
                                                     "gateway.comms_timeout_ms: Input should be a finite"),
    ({"EDGEWARDEN_GATEWAY__CYCLEHZ": "50"}, "EDGEWARDEN_GATEWAY__CYCLEHZ (environment): not a configuration key"),
    ({"EDGEWARDEN_TAGS": "garbage"}, "must hold a JSON object"),
])
def test_bad_environment_variables_are_named(tmp_path: Path, env: dict[str, str], says: str) -> None:
    config = write_config(tmp_path, policy=POLICY)
    for cmd in ("check", "run"):  # run refuses before it touches anything
        r = check(config, env, cmd)
        assert r.returncode == 78 and says in r.stderr, (cmd, r.stderr)


def test_known_variables_and_true_false_from_the_environment_pass(tmp_path: Path) -> None:
    config = write_config(tmp_path, policy=POLICY)
    r = check(config, {"EDGEWARDEN_GATEWAY__AUTO_START": "false", "EDGEWARDEN_SLOW": "1",
                       "EDGEWARDEN_CONNECTIONS__PLC1__TIMEOUT_S": "1.5"})
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("problem", ["missing", "mode 0644", "garbage"])
def test_config_check_finds_a_bad_signing_key(tmp_path: Path, problem: str) -> None:
    key = tmp_path / "keys" / "audit.pem"
    key.parent.mkdir()
    if problem != "missing":
        generate_keypair(key, key.with_name("audit.pem.pub"))
    if problem == "mode 0644":
        key.chmod(0o644)
    if problem == "garbage":
        key.write_text("not a key\n")
    config = write_config(tmp_path, policy=POLICY, replace={r"^(dir = .*)$": rf'\1\nsigning_key = "{key}"'})
    r = check(config)
    assert r.returncode == 78 and "audit.signing_key" in r.stderr, r.stderr
    assert {"missing": "file not found", "mode 0644": "chmod 600", "garbage": "not an unencrypted PEM"}[problem] in r.stderr


def test_a_metrics_port_in_use_stops_the_start_with_one_line(tmp_path: Path) -> None:
    import socket

    from edgewarden.gateway.audit import verify

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = write_config(tmp_path, policy=POLICY, replace={r"^port = 0": f"port = {port}"})
        r = check(config, cmd="run")
    assert r.returncode == 78, r.stderr
    assert f"[metrics] cannot listen on 127.0.0.1:{port}" in r.stderr and "Address already in use" in r.stderr
    assert verify(tmp_path / "audit").ok  # the log it opened is closed cleanly


@pytest.mark.anyio
async def test_a_node_the_server_does_not_have_is_named_at_start(tmp_path: Path) -> None:
    """Not "cannot reach the PLC": the server answered, and said it has no such node."""
    import asyncio

    from edgewarden.simulators.twin import Twin

    async def go() -> subprocess.CompletedProcess[str]:
        async with Twin("cstr", opcua=("127.0.0.1", 0), modbus=None) as twin:
            config = write_config(tmp_path, policy=POLICY, url=twin.opcua_url,
                                  replace={r'^node = "ns=2;s=cstr.CA"': 'node = "ns=2;s=cstr.Ca"'})
            return await asyncio.to_thread(check, config, None, "run")

    r = await go()
    assert r.returncode == 69, r.stderr
    assert "the server has no such node for 1 tag(s): tags.CA node 'ns=2;s=cstr.Ca': BadNodeIdUnknown" in r.stderr
    assert "cannot reach" not in r.stderr


@pytest.mark.parametrize(("names", "why"), [
    (["t"], "tags.t: differs from tags.T only in case"),
    (["\u00c5", "A\u030a"], "ASCII letters, digits and _"),  # NFC and NFD Å
    (["\u0422"], "ASCII letters, digits and _"),  # a Cyrillic Te beside the Latin T
])
def test_tag_names_that_read_alike_are_refused(tmp_path: Path, names: list[str], why: str) -> None:
    from edgewarden.gateway.config import load_config
    from edgewarden.gateway.errors import ConfigError

    extra = "".join(f'\n[tags."{n}"]\nconnection = "plc1"\nnode = "ns=2;s=x{i}"\n' for i, n in enumerate(names))
    config = write_config(tmp_path, policy=MODELS / "cstr_baseline.onnx", extra=extra)
    with pytest.raises(ConfigError, match=why):
        load_config(config)
