"""`audit show`, `audit tail` and `audit export` (JSON lines)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgewarden.gateway.audit import AuditWriter
from edgewarden.gateway.cli import main
from tests.helpers import write_two_run_log

T0 = 1_800_000_000.0


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return write_two_run_log(tmp_path / "log", T0)


def _lines(text: str) -> list[dict]:
    return [json.loads(x) for x in text.splitlines()]


def test_show_marks_writes_the_device_did_not_acknowledge(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "log"
    with AuditWriter(d) as w:
        w.append("cycle", {"n": 0, "written": [1.0], "ack": ["ok", "ok"]})
        w.append("cycle", {"n": 1, "written": [200.0], "ack": ["timeout", "ok"]})
        w.append("trip", {"code": "comms_loss", "safe_write": {"written": [200.0], "ack": ["failed: x", "ok"]}})
        w.append("cycle", {"n": 2, "written": None, "ack": ["not_attempted: not connected"]})
        w.append("cycle", {"n": 3, "written": [5.0], "ack": "sent", "prev_ack": ["ok", "ok"]})
    assert main(["audit", "show", str(d)]) == 0
    out = capsys.readouterr()
    assert len(_lines(out.out)) == 5
    assert "3 record(s) with a write the device did not acknowledge (seq 2..4)" in out.err  # seq counts from 1
    assert main(["audit", "show", str(d), "--failed-writes"]) == 0
    shown = [r["payload"].get("n", r["payload"]["kind"]) for r in _lines(capsys.readouterr().out)]
    assert shown == [1, "trip", 2]


def test_show_filters_by_time_and_kind(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "show", str(log), "--kind", "trip", "--kind", "model_load"]) == 0
    assert [r["payload"]["kind"] for r in _lines(capsys.readouterr().out)] == ["model_load", "trip"]
    assert main(["audit", "show", str(log), "--since", str(T0 + 5), "--until", "2027-01-15T08:00:15Z",
                 "--kind", "cycle"]) == 0
    got = [r["payload"]["n"] for r in _lines(capsys.readouterr().out)]
    assert got == list(range(4, 14))
    assert main(["audit", "show", str(log), "--since", "yesterday"]) == 74
    assert "ISO-8601" in capsys.readouterr().err


def test_tail(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "tail", str(log), "-n", "2"]) == 0
    assert [r["payload"]["n"] for r in _lines(capsys.readouterr().out)] == [18, 19]


def test_export_jsonl_to_stdout(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "export", str(log)]) == 0
    lines = _lines(capsys.readouterr().out)
    assert [r["seq"] for r in lines] == list(range(1, len(lines) + 1)) and len(lines) == 23
    assert not (log / "exported.json").exists()  # stdout is not a copy we can vouch for


