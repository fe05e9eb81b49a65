"""Paths that are not regular files, given to the CLI and to the running daemon: a FIFO
(whose open used to block for ever), /dev/zero (read until MemoryError), a symlink loop,
a directory. Each is one line naming the path and what it is, promptly; the daemon keeps
its policy and still stops on SIGTERM. Also: an OPC UA url with a port out of range is
refused by ``config check``, not by a traceback in ``run``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgewarden.data import MODELS
from tests.fault.harness import bench
from tests.helpers import EXAMPLE, write_config

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The CLI in a process of its own, so a hang is a timeout here, not a hung suite."""
    return subprocess.run([sys.executable, "-m", "edgewarden.gateway.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def odd(tmp_path: Path) -> dict[str, Path]:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    loop = tmp_path / "loop"
    loop.symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(loop)
    (tmp_path / "dir").mkdir()
    return {"a FIFO": fifo, "a character device": Path("/dev/zero"), "a symbolic link loop": loop,
            "a directory": tmp_path / "dir"}


@pytest.mark.parametrize("command", ["config check", "model inspect", "certs show", "train inspect",
                                     "discover --from-csv"])
def test_the_cli_names_a_path_that_is_not_a_regular_file_in_one_line(tmp_path: Path, odd: dict[str, Path],
                                                                      command: str) -> None:
    for kind, path in odd.items():
        args = command.split()
        argv = [*args, str(path)] if command != "discover --from-csv" else ["discover", "modbus", "--from-csv",
                                                                            str(path), "--host", "127.0.0.1"]
        proc = _cli(*argv, cwd=tmp_path)
        err = proc.stderr.strip()
        assert proc.returncode != 0, (command, kind, err)
        assert "Traceback" not in err and len(err.splitlines()) == 1, (command, kind, err)
        assert str(path) in err and kind in err, (command, kind, err)


def test_config_check_refuses_a_url_whose_port_is_out_of_range(tmp_path: Path) -> None:
    config = write_config(tmp_path, policy=MODELS / "cstr_baseline.onnx", url="opc.tcp://127.0.0.1:99999/",
                          example=EXAMPLE)
    proc = _cli("config", "check", str(config), cwd=tmp_path)
    assert proc.returncode == 78, proc.stderr
    assert "connections.plc1.opcua.url" in proc.stderr and "Port out of range" in proc.stderr, proc.stderr


@pytest.mark.anyio
async def test_a_fifo_as_a_model_is_refused_on_the_socket_and_the_policy_stays(tmp_path: Path) -> None:
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    async with bench(tmp_path) as b:
        await b.start_auto()
        before = b.gateway.loop.policy.sha256 if b.gateway.loop else None
        reply = await b.cmd("model", action="load", path=str(fifo))
        assert not reply["ok"] and "a FIFO, not a regular file" in reply["error"], reply
        assert b.mode == "AUTO" and b.gateway.loop is not None and b.gateway.loop.policy.sha256 == before
        refused = [r for r in b.audit_records() if r["kind"] == "operator" and r["cmd"] == "model"]
        assert refused and refused[-1]["outcome"] == "refused" and "FIFO" in refused[-1]["error"]
    # bench() stops the gateway on the way out: it stops (it used to hang in the FIFO's open)
