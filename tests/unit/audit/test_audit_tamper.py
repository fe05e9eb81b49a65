"""Tampering with a written log is found by verify: any byte, any record, any segment.

One limit, stated in docs/audit-format.md: cutting records off the *end* of the log
leaves a shorter log that is itself intact. Only an anchor kept elsewhere (a signed
checkpoint, a head hash a SCADA system recorded) can show that; so deleting the final
record is not among the cases below: test_audit_checkpoint.py cuts the log at random
positions past the last exported checkpoint and checks that verify catches every one.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgewarden.gateway.audit import AuditWriter, verify
from edgewarden.gateway.audit import record as fmt

N_RECORDS = 40
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("audit-base")
    with AuditWriter(d, segment_max_bytes=2048) as w:
        for i in range(N_RECORDS):
            w.append("cycle", {"i": i, "obs": {"T1": 20.0 + i / 8}, "verdict": "ok"})
            if i % 7 == 0:
                w.flush()  # vary how batches meet segment boundaries
    (d / ".lock").unlink()
    assert len(fmt.list_segments(d)) >= 3 and verify(d).ok
    return d


def _layout(d: Path) -> list[tuple[Path, bytes, list[bytes]]]:
    """Each segment as (path, header bytes, [frame bytes...])."""
    out = []
    for _, path in fmt.list_segments(d):
        data = path.read_bytes()
        frames = [data[r.offset : r.offset + fmt.FRAME_HEAD.size + fmt.BODY_MIN + len(r.payload)]
                  for r in fmt.walk(d) if r.path == path]
        out.append((path, data[: fmt.HEADER_SIZE], frames))
    return out


def _rewrite(d: Path, layout: list[tuple[Path, bytes, list[bytes]]], frames: list[bytes], counts: list[int]) -> None:
    pos = 0
    for (path, header, _), n in zip(layout, counts, strict=True):
        (d / path.name).write_bytes(header + b"".join(frames[pos : pos + n]))
        pos += n


def _mutate_records(base: Path, op: str, a: int, b: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "log"
        shutil.copytree(base, d)
        layout = _layout(d)
        frames = [f for _, _, fs in layout for f in fs]
        counts = [len(fs) for _, _, fs in layout]
        seg_of = [i for i, n in enumerate(counts) for _ in range(n)]
        if op == "delete":
            counts[seg_of[a]] -= 1
            del frames[a]
        elif op == "swap":
            frames[a], frames[b] = frames[b], frames[a]
        elif op == "duplicate":
            counts[seg_of[b]] += 1
            frames.insert(b + 1, frames[a])
        _rewrite(d, layout, frames, counts)
        result = verify(d)
        assert not result.ok, (op, a, b)
        assert result.error and "offset" in result.error


@SETTINGS
@given(data=st.data())
def test_flipping_any_byte_is_detected(base: Path, data: st.DataObject) -> None:
    segs = fmt.list_segments(base)
    _, path = segs[data.draw(st.integers(0, len(segs) - 1))]
    size = path.stat().st_size
    offset = data.draw(st.integers(0, size - 1))
    mask = data.draw(st.integers(1, 255))
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "log"
        shutil.copytree(base, d)
        raw = bytearray((d / path.name).read_bytes())
        raw[offset] ^= mask
        (d / path.name).write_bytes(bytes(raw))
        result = verify(d)
        assert not result.ok
        assert path.name in result.error


@SETTINGS
@given(a=st.integers(0, N_RECORDS - 2))
def test_deleting_any_record_but_the_last_is_detected(base: Path, a: int) -> None:
    _mutate_records(base, "delete", a, a)


@SETTINGS
@given(a=st.integers(0, N_RECORDS - 1), b=st.integers(0, N_RECORDS - 1))
def test_reordering_records_is_detected(base: Path, a: int, b: int) -> None:
    if a != b:
        _mutate_records(base, "swap", a, b)


@SETTINGS
@given(a=st.integers(0, N_RECORDS - 1), b=st.integers(0, N_RECORDS - 1))
def test_duplicating_any_record_anywhere_is_detected(base: Path, a: int, b: int) -> None:
    _mutate_records(base, "duplicate", a, b)


@pytest.mark.parametrize("which", ["first", "middle"])
def test_deleting_a_segment_is_detected(base: Path, tmp_path: Path, which: str) -> None:
    d = tmp_path / "log"
    shutil.copytree(base, d)
    segs = fmt.list_segments(d)
    segs[0 if which == "first" else len(segs) // 2][1].unlink()
    assert not verify(d).ok


def test_renaming_a_segment_is_detected(base: Path, tmp_path: Path) -> None:
    d = tmp_path / "log"
    shutil.copytree(base, d)
    _, path = fmt.list_segments(d)[-1]
    path.rename(d / fmt.segment_name(999))  # still last, but the name lies about its start
    assert "does not match file name" in verify(d).error
