"""The audit log cannot vanish under a running gateway, nor be cut or rolled back at
either end between two runs without a record saying so (audit/highwater.py)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from edgewarden.gateway.audit import highwater
from edgewarden.gateway.audit.verify import iter_records, verify
from edgewarden.gateway.audit.writer import AuditWriter
from edgewarden.gateway.cli import main
from edgewarden.gateway.errors import AuditError


def _writer(d: Path, **kw: object) -> AuditWriter:
    return AuditWriter(d, high_water=highwater.path_for(d), **kw)  # type: ignore[arg-type]


def _fails_at_next_commit(w: AuditWriter) -> AuditError:
    w.append("cycle", {"n": 1})
    deadline = time.monotonic() + 10
    while w.failed is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert w.failed is not None
    return w.failed


@pytest.mark.parametrize("how", ["segment removed", "directory removed", "segment replaced", "directory replaced"])
def test_a_log_removed_or_replaced_under_the_writer_fails_at_the_next_commit(tmp_path: Path, how: str) -> None:
    d = tmp_path / "audit"
    fatal: list[AuditError] = []
    w = _writer(d, on_fatal=fatal.append).open()
    w.append_durable("config_load", {"x": 1})
    (seg,) = d.glob("*.seg")
    if how == "segment removed":
        seg.unlink()
    elif how == "directory removed":
        shutil.rmtree(d)
    elif how == "segment replaced":
        copy = seg.read_bytes()
        seg.unlink()
        seg.write_bytes(copy)
    else:
        d.rename(tmp_path / "moved")
        shutil.copytree(tmp_path / "moved", d)
    err = _fails_at_next_commit(w)
    assert "was removed or replaced while the gateway wrote it" in str(err)
    assert fatal == [err]  # the gateway's on_fatal: trip, safe outputs, exit 74
    with pytest.raises(AuditError):
        w.close()


def _log(d: Path, n: int, segment_max_bytes: int = 64 * 1024 * 1024) -> None:
    with _writer(d, segment_max_bytes=segment_max_bytes) as w:
        for i in range(n):
            w.append("cycle", {"n": i, "pad": "x" * 200})


@pytest.mark.parametrize("how", ["directory removed", "newest segment removed", "rolled back to a copy"])
def test_a_log_behind_its_high_water_mark_is_refused_until_a_new_chain_is_started_on_purpose(
        tmp_path: Path, how: str, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "audit"
    _log(d, 10, segment_max_bytes=2048)
    copy = tmp_path / "copy"
    shutil.copytree(d, copy)
    _log(d, 20, segment_max_bytes=2048)  # a second run: the log goes on
    mark = highwater.read(highwater.path_for(d))
    assert mark is not None and mark.seq == 30
    if how == "directory removed":
        shutil.rmtree(d)
    elif how == "newest segment removed":
        max(d.glob("*.seg")).unlink()
    else:
        shutil.rmtree(d)
        shutil.copytree(copy, d)
    with pytest.raises(AuditError, match=r"had written it up to seq 30 .*edgewarden audit new-chain"):
        _writer(d).open()
    assert main(["audit", "new-chain", str(d), "--reason", "restored from backup", "--operator", "alice"]) == 0
    assert "chain_restart" in capsys.readouterr().out
    with _writer(d) as w:  # accepted from now on, and the decision is on record
        w.append("cycle", {"n": 99})
    assert verify(d).ok
    restart = [r.payload for r in iter_records(d) if r.payload["kind"] == "chain_restart"]
    assert len(restart) == 1 and restart[0]["marked_seq"] == 30 and restart[0]["operator"] == "alice"
    assert restart[0]["reason"] == "restored from backup"


@pytest.mark.parametrize("length", [5, 50])
def test_another_log_through_the_mark_is_refused(tmp_path: Path, length: int) -> None:
    d = tmp_path / "audit"
    _log(d, 5)
    shutil.rmtree(d)
    with AuditWriter(d) as w:  # another log, as long or longer, written without the mark
        for i in range(length):
            w.append("cycle", {"n": i, "other": True})
    with pytest.raises(AuditError, match="has another record at seq 5"):
        _writer(d).open()


def test_audit_repair_does_not_move_the_mark_past_a_rolled_back_log(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A repair that cuts nothing is no way around new-chain (it used to move the mark
    silently to the shorter log's end)."""
    d = tmp_path / "audit"
    _log(d, 10)
    shutil.copytree(d, tmp_path / "copy")
    _log(d, 10)
    shutil.rmtree(d)
    shutil.copytree(tmp_path / "copy", d)
    assert main(["audit", "repair", str(d)]) == 74
    assert "edgewarden audit new-chain" in capsys.readouterr().err
    with pytest.raises(AuditError, match="had written it up to seq 20"):
        _writer(d).open()


def test_an_unreadable_mark_gives_way_to_new_chain_on_record(tmp_path: Path) -> None:
    d = tmp_path / "audit"
    _log(d, 3)
    highwater.path_for(d).write_bytes(b"")  # what a lost rename could leave on some filesystems
    with pytest.raises(AuditError, match="is not one this gateway wrote"):
        _writer(d).open()
    assert main(["audit", "new-chain", str(d), "--reason", "mark lost in a power cut", "--operator", "bob"]) == 0
    restart = [r.payload for r in iter_records(d) if r.payload["kind"] == "chain_restart"]
    assert restart and "not one this gateway wrote" in restart[0]["mark_unreadable"]
    with _writer(d):
        pass


def test_the_mark_follows_the_resolved_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "audit"
    _log(d, 2)
    monkeypatch.chdir(d)
    assert highwater.path_for(Path(".")) == highwater.path_for(d) == tmp_path / "audit.state"


@pytest.mark.parametrize("content", [b"", b"{}", b'{"seq": -1, "head": "' + b"0" * 64 + b'"}', b"x" * 9000])
def test_a_mark_that_is_not_ours_is_refused_in_one_line(tmp_path: Path, content: bytes) -> None:
    d = tmp_path / "audit"
    _log(d, 3)
    highwater.path_for(d).write_bytes(content)
    with pytest.raises(AuditError, match="is not one this gateway wrote") as info:
        _writer(d).open()
    assert "\n" not in str(info.value)
