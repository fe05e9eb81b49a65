"""Operator commands over the control socket against the real twin: each audited with the
operator's name and the kernel's uid; a user who is not an operator is refused (and the
attempt is on record); an unprivileged user who cannot open the socket gets a clear error."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from edgewarden.gateway.ops.control import Operators
from tests.fault.harness import bench, wait_for

NOBODY = 65534
# not deadline tests: a loaded CI box must not trip deadline_overrun under them
CALM = {r"^max_consecutive_overruns = 5": "max_consecutive_overruns = 1000"}
PYTHON = "/usr/bin/python3"  # a system interpreter the unprivileged user can run

CLIENT = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print(json.dumps({"connect": "permission denied"})); sys.exit(0)
s.sendall(json.dumps({"cmd": sys.argv[2], "actor": "mallory"}).encode() + b"\\n")
print(s.makefile().readline().strip())
"""

needs_root = pytest.mark.skipif(os.geteuid() != 0 or not Path(PYTHON).exists(),
                                reason="needs root (to run a client as another uid) and /usr/bin/python3")


def as_nobody(sock: Path, cmd: str) -> dict:
    out = subprocess.run([PYTHON, "-c", CLIENT, str(sock), cmd], user=NOBODY, group=NOBODY, extra_groups=[],
                         capture_output=True, text=True, timeout=20, cwd="/")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@needs_root
@pytest.mark.anyio
async def test_operator_commands_permissions_and_audit(tmp_path: Path) -> None:
    sockdir = Path(tempfile.mkdtemp(prefix="edgewarden-ops-"))
    os.chmod(sockdir, 0o755)  # pytest's tmp dirs are 0700: nobody could not even reach the socket
    sock = sockdir / "control.sock"
    replace = {r'^socket = ".*"$': f'socket = "{sock}"\nallowed_uids = [4242]', **CALM}

    async def story() -> None:
        async with bench(tmp_path, replace=replace) as b:
            assert b.sock == sock  # the harness follows the configured socket
            await wait_for(lambda: b.mode == "READY", "READY")
            # 0660 root:root — another user cannot even connect
            assert await asyncio.to_thread(as_nobody, sock, "estop") == {"connect": "permission denied"}
            # past the file permissions, the peer's uid decides: status is open, estop is not
            os.chmod(sock, 0o666)
            st = await asyncio.to_thread(as_nobody, sock, "status")
            assert st["ok"] and st["mode"] == "READY"
            denied = await asyncio.to_thread(as_nobody, sock, "estop")
            assert not denied["ok"] and "permission denied: uid 65534" in denied["error"], denied
            assert b.mode == "READY"

            from edgewarden.gateway.ops.control import send_command

            async def cmd(**kw: object) -> dict:
                return await send_command(sock, {"actor": "alice", **kw})

            assert (await cmd(cmd="start"))["mode"] == "AUTO"
            await wait_for(lambda: b.twin_setpoints()[1] == 100.0, "policy actions at the twin")
            reply = await cmd(cmd="override", action="take", setpoints={"feed_flow_sp": 80.0})
            assert reply["ok"] and reply["mode"] == "MANUAL", reply
            reply = await cmd(cmd="override", action="release")
            assert reply["ok"] and reply["mode"] == "AUTO", reply
            reply = await cmd(cmd="estop", reason="drill")
            assert reply["ok"] and reply["mode"] == "ESTOP"
            await wait_for(lambda: b.twin_setpoints() == (200.0, 0.0), "safe outputs at the twin")
            reply = await cmd(cmd="reset", reason="drill over")
            assert reply["ok"] and reply["mode"] == "INHIBITED", reply
            # refused commands are on record too, with the answer the operator got
            start = await cmd(cmd="start", reason="too early")
            assert not start["ok"] and "start needs READY" in start["error"], start
            promote = await cmd(cmd="model", action="promote")
            assert not promote["ok"] and "no model is running in shadow mode" in promote["error"], promote

            records = b.audit_records()
            ops = [r for r in records if r["kind"] == "operator"]
            assert [(r["cmd"], r.get("action")) for r in ops][:1] == [("start", None)]
            assert [(r["cmd"], r["outcome"]) for r in ops] == [
                ("start", "accepted"), ("override", "accepted"), ("override", "accepted"), ("estop", "accepted"),
                ("reset", "accepted"), ("start", "refused"), ("model", "refused")]
            for r in ops:
                assert r["operator"] == "alice" and r["uid"] == 0 and r["user"] == "root" and r["cid"]
                assert r["actor"] == "root (uid 0) as alice"  # the kernel's word first
            assert [r["reason"] for r in ops if r["cmd"] in ("estop", "reset")] == ["drill", "drill over"]
            assert ops[-2]["error"] == start["error"] and ops[-2]["cid"] == start["cid"]
            assert ops[-1]["error"] == promote["error"]
            refused = [r for r in records if r["kind"] == "operator_denied"]
            assert len(refused) == 1 and refused[0]["uid"] == NOBODY and refused[0]["cmd"] == "estop"
            trip = next(r for r in records if r["kind"] == "trip")
            assert trip["code"] == "operator_estop" and trip["actor"] == "root (uid 0) as alice"

    try:
        await story()
    finally:
        for p in sockdir.iterdir():
            p.unlink()
        sockdir.rmdir()


def test_operators_allow_list_and_group() -> None:
    import grp

    assert Operators().refuse(12345, 12345) is None  # nothing configured: the socket file decides
    ops = Operators(allowed_uids=[4242])
    assert ops.refuse(4242, 1) is None and ops.refuse(0, 0) is None and ops.refuse(os.getuid(), 0) is None
    assert "uid 12345" in (ops.refuse(12345, 12345) or "")
    group = grp.getgrgid(os.getgid()).gr_name
    by_group = Operators(group=group)
    assert by_group.refuse(12345, os.getgid()) is None
    assert "group" in (by_group.refuse(12345, 12345) or "")
    assert "does not exist" in (Operators(group="no-such-group-xyz").refuse(12345, 1) or "")


@pytest.mark.anyio
async def test_sighup_reload_applies_new_limits_between_cycles(tmp_path: Path) -> None:
    """A tightened hard limit, reloaded while running, trips on the next cycles."""
    import signal

    async with bench(tmp_path, replace=CALM) as b:
        await wait_for(lambda: b.mode == "READY", "READY")
        assert (await b.cmd("start"))["ok"]
        config = b.tmp / "gateway.toml"
        text = config.read_text()
        # a refused reload (cycle rate) changes nothing
        config.write_text(text.replace("cycle_hz = 20.0", "cycle_hz = 25.0"))
        assert b.gateway.request_reload().result == "refused"
        reply = await b.cmd("reload")  # the operator's answer names the key, as its record does
        assert not reply["ok"] and "gateway.cycle_hz" in reply["error"], reply
        record = [r for r in b.audit_records() if r["kind"] == "operator"][-1]
        assert record["cmd"] == "reload" and record["outcome"] == "refused" and "gateway.cycle_hz" in record["error"]
        assert b.gateway.loop is not None and b.gateway.loop.period == 0.05
        config.write_text(text.replace("hard = [290.0, 400.0]", "hard = [290.0, 300.0]", 1)
                          .replace("soft = [320.0, 380.0]", "soft = [292.0, 298.0]", 1))
        os.kill(os.getpid(), signal.SIGHUP)  # the gateway's own handler, as systemctl reload does
        await wait_for(lambda: b.mode == "ESTOP", "the trip on the reloaded limit", timeout=5)
        assert b.gateway.loop.estop.last is not None
        assert b.gateway.loop.estop.last.code == "hard_limit:T:high"
        kinds = [r["kind"] for r in b.audit_records()]
        assert "config_reload_refused" in kinds and kinds.count("config_load") == 2


@pytest.mark.anyio
async def test_stop_hands_over_as_configured(tmp_path: Path) -> None:
    """on_stop = "plc": SIGTERM writes nothing more; the PLC's dead-man timer takes over."""

    replace = {r"^comms_timeout_ms = 1000(.*)$": 'comms_timeout_ms = 1000\\1\non_stop = "plc"', **CALM}
    async with bench(tmp_path, replace=replace) as b:
        assert b.gateway.settings.gateway.on_stop == "plc"
        await b.start_auto()
        b.gateway.request_stop()
        await wait_for(lambda: not b.sock.exists(), "the gateway to stop", timeout=10)  # after the hand-over
        assert b.twin_setpoints()[1] == 100.0  # not overwritten with the safe outputs
        await wait_for(lambda: not b.twin.image["remote"], "the PLC's dead-man to take over", timeout=3)
