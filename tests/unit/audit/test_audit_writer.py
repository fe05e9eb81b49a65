"""AuditWriter: round trip, chain continuity, rotation, durability, fatal errors."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from pathlib import Path

import pytest

from edgewarden.gateway.audit import AuditWriter, iter_records, verify
from edgewarden.gateway.audit import record as fmt
from edgewarden.gateway.errors import AuditError


def _payloads(directory: Path) -> list[dict]:
    return [r.payload for r in iter_records(directory)]


def test_round_trip(tmp_path: Path) -> None:
    with AuditWriter(tmp_path) as w:
        seqs = [w.append("cycle", {"i": i, "obs": {"T1": 20.5 + i}, "ok": True}) for i in range(50)]
        seqs.append(w.append("mode", {"mode": "AUTO", "actor": "op1", "reason": "start"}))
    assert seqs == list(range(1, 52))
    recs = list(iter_records(tmp_path))
    assert [r.seq for r in recs] == seqs
    assert recs[3].payload["i"] == 3 and recs[3].payload["kind"] == "cycle"
    assert recs[3].payload["obs"] == {"T1": 23.5}
    assert recs[-1].payload["actor"] == "op1"
    assert {"t_wall", "t_mono"} <= recs[0].payload.keys()
    result = verify(tmp_path)
    assert result.ok and result.records == 51 and result.head == recs[-1].hash


def test_payload_is_snapshotted_and_canonical(tmp_path: Path) -> None:
    shared = {"vals": [1.0, 2.0]}
    with AuditWriter(tmp_path) as w:
        w.append("cycle", shared)
        shared["vals"].append(3.0)  # the caller reuses its dict at once
        w.append("cycle", {"z": float("nan"), "a": float("inf"), "é": "ü", "t_mono": 5.0})
    recs = list(fmt.walk(tmp_path))
    assert recs[0].decode()["vals"] == [1.0, 2.0]
    raw = recs[1].payload
    assert raw.startswith(b'{"a":"Infinity","kind":"cycle","t_mono":5.0,"t_wall":')
    assert raw.endswith('"z":"NaN","é":"ü"}'.encode())


def test_kind_in_payload_refused(tmp_path: Path) -> None:
    with AuditWriter(tmp_path) as w, pytest.raises(ValueError, match="kind"):
        w.append("cycle", {"kind": "x"})


def test_numpy_values_fall_back(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    with AuditWriter(tmp_path) as w:
        w.append("cycle", {"a": np.float32(1.5), "b": np.array([1, 2]), "c": np.float64("nan")})
    assert _payloads(tmp_path)[0] | {"t_wall": 0, "t_mono": 0} == {
        "a": 1.5, "b": [1, 2], "c": "NaN", "kind": "cycle", "t_wall": 0, "t_mono": 0}


def test_reopen_continues_chain(tmp_path: Path) -> None:
    with AuditWriter(tmp_path) as w:
        for i in range(10):
            w.append("cycle", {"i": i})
    head1 = verify(tmp_path).head
    with AuditWriter(tmp_path) as w:
        assert w.last_seq == 10
        assert w.append("cycle", {"i": 10}) == 11
    recs = list(fmt.walk(tmp_path))
    assert recs[10].prev_hash.hex() == head1
    assert verify(tmp_path).ok and verify(tmp_path).records == 11


def test_rotation_keeps_chain(tmp_path: Path) -> None:
    with AuditWriter(tmp_path, segment_max_bytes=2048) as w:
        for i in range(200):
            w.append("cycle", {"i": i, "pad": "x" * 50})
            if i % 37 == 0:
                w.flush()
    segs = fmt.list_segments(tmp_path)
    assert len(segs) > 5
    assert all(p.stat().st_size <= 2048 for _, p in segs)
    result = verify(tmp_path)
    assert result.ok and result.records == 200 and result.segments == len(segs)
    with AuditWriter(tmp_path, segment_max_bytes=2048) as w:
        w.append("cycle", {"i": 200})
    assert verify(tmp_path).records == 201


def test_append_durable_is_on_disk_when_it_returns(tmp_path: Path) -> None:
    w = AuditWriter(tmp_path, commit_interval_s=5.0).open()  # group commit would wait 5 s
    try:
        w.append("cycle", {"i": 0})
        seq = w.append_durable("trip", {"code": "HARD_LIMIT"})
        # read through a separate open of the file, not through the writer
        recs = list(fmt.walk(tmp_path))
        assert recs[-1].seq == seq == 2 and recs[-1].decode()["code"] == "HARD_LIMIT"
        assert w.stats().durable_seq >= seq
    finally:
        w.close()


@pytest.mark.anyio
async def test_append_durable_async(tmp_path: Path) -> None:
    async def main(w: AuditWriter) -> list[int]:
        w.append("cycle", {"i": 0})
        seqs = await asyncio.gather(*(w.append_durable_async("operator", {"n": n}) for n in range(5)))
        assert max(r.seq for r in fmt.walk(tmp_path)) >= max(seqs)
        return list(seqs)

    with AuditWriter(tmp_path, commit_interval_s=5.0) as w:
        assert await main(w) == [2, 3, 4, 5, 6]


def test_flush_and_stats(tmp_path: Path) -> None:
    with AuditWriter(tmp_path, commit_interval_s=5.0) as w:
        for i in range(100):
            w.append("cycle", {"i": i})
        assert w.flush() == 100
        st = w.stats()
        assert st.records_written == 100 and st.durable_seq == 100 and st.pending == 0
        assert st.bytes_written > 100 * fmt.BODY_MIN and st.last_commit_latency_s > 0


def test_second_writer_refused(tmp_path: Path) -> None:
    with AuditWriter(tmp_path):
        with pytest.raises(AuditError, match="another process"):
            AuditWriter(tmp_path).open()


def test_append_when_closed(tmp_path: Path) -> None:
    w = AuditWriter(tmp_path)
    with pytest.raises(AuditError, match="not open"):
        w.append("cycle", {})
    w.open()
    w.close()
    w.close()  # idempotent
    with pytest.raises(AuditError, match="not open"):
        w.append("cycle", {})


def _enospc(*_a: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def _check_fatal(w: AuditWriter, calls: list[AuditError]) -> None:
    assert isinstance(w.failed, AuditError)
    assert calls == [w.failed]
    with pytest.raises(AuditError):
        w.append("cycle", {"i": 1})
    with pytest.raises(AuditError):
        w.append_durable("trip", {})
    with pytest.raises(AuditError):
        w.close()


def test_fsync_error_is_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[AuditError] = []
    w = AuditWriter(tmp_path, on_fatal=calls.append).open()
    monkeypatch.setattr(os, "fsync", _enospc)
    with pytest.raises(AuditError, match="No space left"):
        w.append_durable("trip", {"code": "X"})
    monkeypatch.undo()
    _check_fatal(w, calls)


@pytest.mark.anyio
async def test_write_error_is_fatal_and_wakes_async_waiters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[AuditError] = []
    w = AuditWriter(tmp_path, on_fatal=calls.append).open()
    monkeypatch.setattr(os, "write", lambda *_a: _enospc())

    with pytest.raises(AuditError):
        await w.append_durable_async("trip", {})
    monkeypatch.undo()
    _check_fatal(w, calls)


def test_group_commit_error_is_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hit = threading.Event()
    calls: list[AuditError] = []

    def on_fatal(err: AuditError) -> None:
        calls.append(err)
        hit.set()

    w = AuditWriter(tmp_path, commit_interval_s=0.005, on_fatal=on_fatal).open()
    monkeypatch.setattr(os, "fsync", _enospc)
    w.append("cycle", {"i": 0})  # plain append: the failure surfaces through on_fatal
    assert hit.wait(5)
    monkeypatch.undo()
    _check_fatal(w, calls)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory_is_fatal_on_rotation(tmp_path: Path) -> None:
    calls: list[AuditError] = []
    w = AuditWriter(tmp_path, segment_max_bytes=2048, on_fatal=calls.append).open()
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(AuditError):
            for i in range(100):
                w.append_durable("cycle", {"pad": "x" * 100, "i": i})
    finally:
        tmp_path.chmod(0o755)
    _check_fatal(w, calls)


def test_rotation_error_is_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the root-proof version of the read-only directory: creating the next segment fails
    calls: list[AuditError] = []
    w = AuditWriter(tmp_path, segment_max_bytes=2048, on_fatal=calls.append).open()
    real_open = os.open

    def guarded_open(path: object, flags: int, *a: object) -> int:
        if str(path).endswith(".tmp"):
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(path, flags, *a)

    monkeypatch.setattr(os, "open", guarded_open)
    with pytest.raises(AuditError, match="Read-only"):
        for i in range(100):
            w.append_durable("cycle", {"pad": "x" * 100, "i": i})
    monkeypatch.undo()
    _check_fatal(w, calls)
    assert verify(tmp_path).ok  # what was written before the failure is intact


def test_backlog_overflow_is_fatal(tmp_path: Path) -> None:
    calls: list[AuditError] = []
    w = AuditWriter(tmp_path, commit_interval_s=60, max_pending=10, on_fatal=calls.append).open()
    with pytest.raises(AuditError, match="behind"):
        for i in range(20):
            w.append("cycle", {"i": i})
    _check_fatal(w, calls)


def test_unencodable_value_is_refused_to_the_caller_and_leaves_no_gap(tmp_path: Path) -> None:
    with AuditWriter(tmp_path) as w:
        first = w.append("cycle", {"i": 1})
        with pytest.raises(AuditError, match="'cycle' cannot be encoded.*bytes"):
            w.append("cycle", {"raw": b"\x00\x01"})  # JSON cannot hold bytes
        assert w.failed is None  # one bad record is the caller's error, not a broken log
        second = w.append("cycle", {"i": 2})
    assert second == first + 1
    assert [p["i"] for p in _payloads(tmp_path)] == [1, 2] and verify(tmp_path).ok
