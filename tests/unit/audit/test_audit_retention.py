"""Rotation by size and age; retention never deletes a segment that was not exported."""

from __future__ import annotations

import json
import time
from pathlib import Path

from gateway.audit import AuditWriter, iter_records, verify
from gateway.audit import record as fmt
from gateway.audit.writer import EXPORTED_NAME
from gateway.cli import main


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
