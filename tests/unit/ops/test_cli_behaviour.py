"""The command line as an operator meets it: --version, a closed pipe, a status view that
outlives a daemon restart, operator commands that need the socket but not the plant's
secrets, and config check refusing what run would refuse."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from edgewarden.data import MODELS
from edgewarden.gateway.audit import AuditWriter
from edgewarden.gateway.cli import main
from tests.helpers import EXAMPLE, write_config

ROOT = Path(__file__).resolve().parents[3]
POLICY = MODELS / "cstr_baseline.onnx"


def _cli(*args: str, **kw: Any) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEWARDEN_")}
    return subprocess.Popen([sys.executable, "-m", "edgewarden.gateway.cli", *args], cwd=ROOT, env={**env, **kw.pop("env", {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("edgewarden ") and len(out.split()) == 2, out


def test_a_reader_that_leaves_early_ends_the_command_quietly(tmp_path: Path) -> None:
    """``edgewarden audit verify LOG | head``, ``audit export LOG | head``, ``status | head``:
    no BrokenPipeError traceback, exit 0 (the reader had what it wanted)."""
    with AuditWriter(tmp_path / "log") as w:
        for i in range(3000):  # ~1 MB of JSON lines: far more than a pipe holds
            w.append("cycle", {"n": i, "pad": "x" * 200})
    for args in (("audit", "export", str(tmp_path / "log")), ("audit", "show", str(tmp_path / "log")),
                 ("config", "reference")):
        p = _cli(*args)
        assert p.stdout is not None and p.stderr is not None
        assert p.stdout.read(1)
        p.stdout.close()  # what head does after its lines
        err = p.stderr.read()
        p.stderr.close()
        assert p.wait(timeout=60) == 0 and "Traceback" not in err and "Broken pipe" not in err, (args, err)


@pytest.mark.anyio
async def test_status_watch_outlives_a_daemon_restart(tmp_path: Path) -> None:
    from edgewarden.gateway.ops.control import ControlServer

    sock = tmp_path / "control.sock"

    async def status(req: dict[str, Any]) -> dict[str, Any]:
        return {"mode": "AUTO", "gateway": "watch-test", "pid": 1}

    watch = _cli("status", "--watch", "0.2", "--socket", str(sock))
    assert watch.stdout is not None
    seen: list[str] = []

    async def until(text: str) -> None:
        end = time.monotonic() + 20
        while not any(text in line for line in seen):
            assert watch.poll() is None, f"the watch exited: {seen}"
            assert time.monotonic() < end, seen
            seen.append(await asyncio.to_thread(watch.stdout.readline))

    try:
        await until("no answer from the gateway")  # not started yet: wait, do not exit
        for _ in range(2):  # up, down (a restart), up again
            server = ControlServer(sock, {"status": status})
            await server.start()
            seen.clear()
            await until("mode AUTO")
            await server.close()
            seen.clear()
            await until("no answer from the gateway")
    finally:
        watch.send_signal(signal.SIGINT)
        watch.communicate(timeout=10)


def test_operator_commands_read_the_socket_not_the_plant_secrets(tmp_path: Path) -> None:
    """A config whose OPC UA password comes from the environment: an operator's shell does
    not have it, and needs only the socket."""
    from edgewarden.gateway.config import control_socket_of

    config = write_config(tmp_path, policy=POLICY, replace={
        r'^url = "(opc.tcp://[^"]*)"': 'url = "\\1"\nusername = "gw"'})  # password: EDGEWARDEN_CONNECTIONS__PLC1__PASSWORD
    assert control_socket_of(config) == (tmp_path / "control.sock").resolve()
    os.environ["EDGEWARDEN_CONTROL__SOCKET"] = "/run/other.sock"
    try:
        assert control_socket_of(config) == Path("/run/other.sock")
    finally:
        del os.environ["EDGEWARDEN_CONTROL__SOCKET"]
    p = _cli("status", "--config", str(config))
    out, err = p.communicate(timeout=60)
    assert p.returncode != 78 and "password" not in err, err  # not a config error: no gateway there
    assert str(tmp_path / "control.sock") in err, err


def test_reset_help_says_the_operator_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["reset", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(required: the person responsible)" in text and "default: your login name" not in text


def test_config_check_refuses_a_missing_model_and_a_missing_group(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, policy=tmp_path / "nowhere.onnx", replace={
        r'^socket = "(.*)"$': 'socket = "\\1"\noperators_group = "no-such-group-ew"'})
    capsys.readouterr()
    assert main(["config", "check", str(config)]) == 78
    err = capsys.readouterr().err
    assert f"{config}: policy.path: {tmp_path / 'nowhere.onnx'} does not exist" in err, err
    assert f"{config}: control.operators_group: there is no group 'no-such-group-ew'" in err, err
    assert main(["config", "check", str(EXAMPLE)]) == 0
