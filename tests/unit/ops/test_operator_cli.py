"""The operator CLI's argument handling (the commands themselves run in tests/integration)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgewarden.gateway.cli import build_parser, main


def test_commands_and_the_ctl_alias_parse() -> None:
    p = build_parser()
    a = p.parse_args(["override", "take", "--socket", "s", "--setpoint", "feed_flow_sp=80"])
    assert (a.action, a.override, a.setpoint) == ("override", "take", ["feed_flow_sp=80"])
    a = p.parse_args(["reset", "--operator", "alice", "--reason", "cleared"])
    assert (a.actor, a.reason) == ("alice", "cleared")
    a = p.parse_args(["ctl", "--socket", "s", "--actor", "bob", "manual"])
    assert (a.action, a.actor) == ("manual", "bob")
    a = p.parse_args(["status", "--watch"])
    assert a.watch == 1.0


def test_reset_needs_operator_and_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["reset", "--socket", str(tmp_path / "s"), "--operator", "alice"])
    assert "--reason" in capsys.readouterr().err
    assert main(["reset", "--socket", str(tmp_path / "s"), "--reason", "x"]) == 1
    assert "needs --operator NAME" in capsys.readouterr().err


def test_no_daemon_is_one_clear_paragraph(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estop", "--socket", str(tmp_path / "none.sock")]) == 1
    err = capsys.readouterr().err
    assert "no gateway is listening" in err and "Traceback" not in err
