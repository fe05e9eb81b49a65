"""Rotation by size and age; retention never deletes a segment that was not exported."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgewarden.gateway.audit import AuditWriter, iter_records, retention, verify
from edgewarden.gateway.audit import record as fmt
from edgewarden.gateway.audit.files import EXPORTED_NAME
from edgewarden.gateway.cli import main
from edgewarden.gateway.errors import AuditError


def _fill(w: AuditWriter, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        w.append("cycle", {"i": i, "pad": "x" * 100})
        if i % 5 == 4:
            w.flush()
    w.flush()


def test_retention_keeps_unexported_segments_and_says_so(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with AuditWriter(log, segment_max_bytes=2048, retention_max_segments=3) as w:
        _fill(w, 120)
        stats = w.stats()
    assert stats.segments_deleted == 0 and stats.retention_blocked > 0
    assert len(fmt.list_segments(log)) > 3
    assert verify(log).ok and verify(log).first_seq == 1


def test_retention_deletes_only_exported_segments_and_records_it(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with AuditWriter(log, segment_max_bytes=2048) as w:
        _fill(w, 120)
    assert main(["audit", "export", str(log), "-o", str(tmp_path / "copy.jsonl")]) == 0
    through = json.loads((log / EXPORTED_NAME).read_text())["through_seq"]
    assert through == 120
    n_before = len(fmt.list_segments(log))
    with AuditWriter(log, segment_max_bytes=2048, retention_max_segments=3) as w:
        _fill(w, 60, start=120)  # rotations run retention
        stats = w.stats()
    segs = fmt.list_segments(log)
    assert stats.segments_deleted > 0 and len(segs) < n_before + 5
    # nothing above the marker is gone, and the new start is explained by a retention record
    first = segs[0][0]
    assert 1 < first <= through + 1
    records = list(iter_records(log))
    ret = [r.payload for r in records if r.payload["kind"] == "retention"]
    assert ret and ret[-1]["first_seq_kept"] == first and ret[-1]["exported_through"] == through
    result = verify(log)
    assert result.ok, result.error
    assert result.first_seq == first
    # everything deleted is in the export
    exported = {json.loads(line)["seq"] for line in (tmp_path / "copy.jsonl").read_text().splitlines()}
    assert set(range(1, first)) <= exported


def test_a_log_cut_at_its_start_without_retention_record_fails(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with AuditWriter(log, segment_max_bytes=2048) as w:
        _fill(w, 60)
    fmt.list_segments(log)[0][1].unlink()
    result = verify(log)
    assert not result.ok
    with pytest.raises(AuditError, match="no retention record explains its start"):
        AuditWriter(log).open()  # and the writer refuses it too


def test_segments_rotate_by_age(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with AuditWriter(log, segment_max_age_s=0.05, commit_interval_s=0.005) as w:
        for i in range(6):
            w.append("cycle", {"i": i})
            w.flush()
            time.sleep(0.06)
    assert len(fmt.list_segments(log)) >= 4
    assert verify(log).ok


def test_filtered_exports_do_not_mark_anything_exported(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with AuditWriter(log) as w:
        _fill(w, 10)
    assert main(["audit", "export", str(log), "--kind", "cycle", "-o", str(tmp_path / "c.jsonl")]) == 0
    assert not (log / EXPORTED_NAME).exists()


def _export_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_repeated_exports_to_one_file_under_retention_lose_nothing(tmp_path: Path) -> None:
    """The field report: retention of 3 small segments, an export to the same file after
    every burst. The file continues (never overwritten), so every record ever written is
    in the export or still in the log, and the export is one unbroken hash chain."""
    log, out = tmp_path / "log", tmp_path / "history.jsonl"
    written = 0
    for burst in range(5):
        with AuditWriter(log, segment_max_bytes=2048, retention_max_segments=3) as w:
            _fill(w, 40, start=written)
        written += 40
        assert main(["audit", "export", str(log), "-o", str(out)]) == 0
    lines = _export_lines(out)
    seqs = [x["seq"] for x in lines]
    assert seqs == list(range(1, len(seqs) + 1))  # appended in order, no gap, no repeat
    in_log = [r.seq for r in iter_records(log)]
    assert in_log[0] > 1  # retention did delete segments
    assert set(range(1, in_log[-1] + 1)) <= set(seqs) | set(in_log)
    by_seq = {r.seq: r.hash for r in iter_records(log)}
    assert all(by_seq[x["seq"]] == x["hash"] for x in lines if x["seq"] in by_seq)
    payloads = [x["payload"]["i"] for x in lines if x["payload"]["kind"] == "cycle"]
    assert payloads == list(range(written))  # every cycle record of every burst


def test_exports_never_overwrite_a_file(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "log"
    with AuditWriter(log) as w:
        _fill(w, 10)
    full = tmp_path / "full.jsonl"
    assert main(["audit", "export", str(log), "-o", str(full)]) == 0
    before = full.read_bytes()
    # a filtered or HDF5 export onto an existing file is refused, the file untouched
    assert main(["audit", "export", str(log), "--kind", "cycle", "-o", str(full)]) == 74
    assert "never overwrites" in capsys.readouterr().err
    assert full.read_bytes() == before
    # a file that is not an export of this log
    other = tmp_path / "notes.txt"
    other.write_text("hello\n")
    assert main(["audit", "export", str(log), "-o", str(other)]) == 74
    assert other.read_text() == "hello\n"
    with AuditWriter(tmp_path / "other-log") as w:
        _fill(w, 3)
    foreign = tmp_path / "foreign.jsonl"
    assert main(["audit", "export", str(tmp_path / "other-log"), "-o", str(foreign)]) == 0
    assert main(["audit", "export", str(log), "-o", str(foreign)]) == 74
    assert "does not continue" in capsys.readouterr().err
    # an interrupted export (no final newline) is not appended to
    torn = tmp_path / "torn.jsonl"
    torn.write_bytes(before[:-10])
    assert main(["audit", "export", str(log), "-o", str(torn)]) == 74
    assert "incomplete line" in capsys.readouterr().err
    # nothing new: the file is unchanged, the marker stays
    assert main(["audit", "export", str(log), "-o", str(full)]) == 0
    assert full.read_bytes() == before


def test_an_export_file_left_behind_by_a_later_export_elsewhere_is_refused(tmp_path: Path) -> None:
    """F holds 1..40, G 1..80, retention then deletes through 80: continuing F would skip
    41..80 (they are in G only), so it is refused."""
    log = tmp_path / "log"
    f, g = tmp_path / "f.jsonl", tmp_path / "g.jsonl"
    with AuditWriter(log, segment_max_bytes=2048) as w:
        _fill(w, 40)
    assert main(["audit", "export", str(log), "-o", str(f)]) == 0
    with AuditWriter(log, segment_max_bytes=2048) as w:
        _fill(w, 40, start=40)
    assert main(["audit", "export", str(log), "-o", str(g)]) == 0
    with AuditWriter(log, segment_max_bytes=2048, retention_max_segments=2) as w:
        _fill(w, 40, start=80)
    first = fmt.list_segments(log)[0][0]
    f_last = _export_lines(f)[-1]["seq"]
    assert first > f_last + 1
    before = f.read_bytes()
    assert main(["audit", "export", str(log), "-o", str(f)]) == 74
    assert f.read_bytes() == before
    assert main(["audit", "export", str(log), "-o", str(g)]) == 0  # G continues


def _over(segments: list[retention.Segment], limits: retention.Limits) -> bool:
    """Whether the oldest of ``segments`` is over a limit (the rule as docs/audit-format.md states it)."""
    return ((limits.max_segments is not None and len(segments) > limits.max_segments)
            or (limits.max_bytes is not None and sum(s.size for s in segments) > limits.max_bytes)
            or (limits.max_age_s is not None and segments[0].age_s > limits.max_age_s))


@st.composite
def _logs(draw: st.DrawFn) -> tuple[list[retention.Segment], retention.Limits, int]:
    lengths = draw(st.lists(st.integers(1, 50), min_size=0, max_size=12))
    ages = sorted(draw(st.lists(st.floats(0, 1000), min_size=len(lengths), max_size=len(lengths))), reverse=True)
    first, segments = 1, []
    for n, age in zip(lengths, ages, strict=True):
        segments.append(retention.Segment(first, draw(st.integers(64, 5000)), age))
        first += n
    limits = retention.Limits(draw(st.none() | st.integers(2, 8)), draw(st.none() | st.integers(1000, 40000)),
                              draw(st.none() | st.floats(1, 1000)))
    return segments, limits, draw(st.integers(0, first + 5))


@given(_logs())
def test_retention_plan_deletes_only_exported_prefixes_over_a_limit(log) -> None:
    segments, limits, through = log
    doomed, blocked = retention.plan(segments, limits, through)
    assert 0 <= doomed <= max(len(segments) - 1, 0)  # never the segment being written
    for i in range(doomed):
        assert segments[i + 1].first_seq - 1 <= through  # every record of it was exported
        assert _over(segments[i:], limits)  # and the log was over a limit before it went
    rest = segments[doomed:]
    if blocked:
        assert doomed + blocked == len(segments) - 1 and _over(rest, limits)
        assert rest[1].first_seq - 1 > through
    elif len(rest) > 1:
        assert not _over(rest, limits)  # stopped only because nothing more is over a limit
