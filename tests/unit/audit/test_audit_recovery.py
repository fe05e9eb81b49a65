"""Opening a damaged log: a torn tail is repaired and recorded, anything else refuses."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from edgewarden.gateway.audit import AuditWriter, iter_records, verify
from edgewarden.gateway.audit import record as fmt
from edgewarden.gateway.errors import AuditError


def _log(directory: Path, n: int = 20, **kw: object) -> list[fmt.Record]:
    with AuditWriter(directory, **kw) as w:  # type: ignore[arg-type]
        for i in range(n):
            w.append("cycle", {"i": i, "pad": "p" * 40})
    return list(fmt.walk(directory))


def _last_segment(directory: Path) -> Path:
    return fmt.list_segments(directory)[-1][1]


@pytest.mark.parametrize("cut", [1, 7, 20, 47, 60])
def test_torn_tail_repaired_and_recorded(tmp_path: Path, cut: int) -> None:
    recs = _log(tmp_path)
    seg = _last_segment(tmp_path)
    data = seg.read_bytes()
    seg.write_bytes(data[:-cut])  # a crash mid-write of the last record
    torn_offset = recs[-1].offset
    cut_bytes = data[torn_offset:-cut]
    bad = verify(tmp_path)
    assert not bad.ok and "crash tail" in bad.error and bad.records == 19
    with AuditWriter(tmp_path) as w:
        assert w.last_seq == 20  # 19 intact + the repair record
        w.append("cycle", {"i": "after"})
    assert verify(tmp_path).ok
    out = list(iter_records(tmp_path))
    repair = out[19].payload
    assert repair["kind"] == "repair" and out[19].seq == 20
    assert repair["file"] == seg.name and repair["offset"] == torn_offset
    assert repair["cut_bytes"] == len(cut_bytes)
    assert repair["cut_sha256"] == hashlib.sha256(cut_bytes).hexdigest()
    assert base64.b64decode(repair["cut_head_b64"]) == cut_bytes
    assert out[20].payload["i"] == "after"


@pytest.mark.parametrize("tail", [b"\x00" * 4096, b"\xff" * 10, b"garbage that is not a frame" * 3])
def test_junk_after_last_record_is_a_torn_tail(tmp_path: Path, tail: bytes) -> None:
    _log(tmp_path)
    seg = _last_segment(tmp_path)
    with seg.open("ab") as f:
        f.write(tail)
    with AuditWriter(tmp_path) as w:
        assert w.last_seq == 21
    assert verify(tmp_path).ok
    assert list(iter_records(tmp_path))[-1].payload["cut_bytes"] == len(tail)


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_corruption_in_middle_of_last_segment_refuses(tmp_path: Path) -> None:
    recs = _log(tmp_path)
    target = recs[10]
    _flip(target.path, target.offset + 60)  # inside the payload
    before = target.path.read_bytes()
    with pytest.raises(AuditError, match=rf"{target.path.name}, offset {target.offset}, seq 11: crc mismatch"):
        AuditWriter(tmp_path).open()
    assert target.path.read_bytes() == before  # nothing repaired, nothing appended


def test_corrupt_length_field_in_last_segment_refuses(tmp_path: Path) -> None:
    recs = _log(tmp_path)
    _flip(recs[5].path, recs[5].offset + 1)  # the length field: framing is lost from here
    with pytest.raises(AuditError, match="not a crash tail"):
        AuditWriter(tmp_path).open()


def test_corruption_in_earlier_segment_refuses(tmp_path: Path) -> None:
    recs = _log(tmp_path, 60, segment_max_bytes=2048)
    assert len(fmt.list_segments(tmp_path)) > 2
    last_of_first = [r for r in recs if r.path == recs[0].path][-1]
    _flip(last_of_first.path, last_of_first.path.stat().st_size - 2)  # its very last byte but one
    with pytest.raises(AuditError, match=rf"{last_of_first.path.name}, offset {last_of_first.offset}"):
        AuditWriter(tmp_path).open()


def test_truncated_earlier_segment_refuses(tmp_path: Path) -> None:
    _log(tmp_path, 60, segment_max_bytes=2048)
    first = fmt.list_segments(tmp_path)[0][1]
    first.write_bytes(first.read_bytes()[:-5])
    with pytest.raises(AuditError, match=first.name):
        AuditWriter(tmp_path).open()


def test_complete_but_unchained_record_at_tail_refuses(tmp_path: Path) -> None:
    recs = _log(tmp_path)
    seg = _last_segment(tmp_path)
    frame, _ = fmt.encode_frame(21, b"\x11" * 32, b'{"kind":"forged"}')
    with seg.open("ab") as f:
        f.write(frame)
    with pytest.raises(AuditError, match="prev_hash"):
        AuditWriter(tmp_path).open()
    assert recs  # the log itself is untouched


def test_bad_header_refuses(tmp_path: Path) -> None:
    _log(tmp_path)
    _flip(_last_segment(tmp_path), 20)
    with pytest.raises(AuditError, match="header crc"):
        AuditWriter(tmp_path).open()


def test_leftover_temp_segment_removed_and_recorded(tmp_path: Path) -> None:
    _log(tmp_path)
    tmp = tmp_path / (fmt.segment_name(21) + ".tmp")
    tmp.write_bytes(b"EWAUDIT1")
    with AuditWriter(tmp_path):
        pass
    assert not tmp.exists()
    assert list(iter_records(tmp_path))[-1].payload["removed_files"] == [tmp.name]


def test_empty_directory_starts_at_genesis(tmp_path: Path) -> None:
    d = tmp_path / "new" / "audit"
    with AuditWriter(d) as w:
        assert w.append("config_load", {"sha256": "ab" * 32}) == 1
    recs = list(fmt.walk(d))
    assert recs[0].prev_hash == fmt.GENESIS_HASH
    assert verify(d).ok


def test_a_complete_last_record_failing_its_crc_refuses_until_the_operator_repairs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Bit rot in a durable record is not a crash: the writer refuses (nothing modified)
    and names the command; ``audit repair`` cuts it, recorded, and the log goes on."""
    from edgewarden.gateway.cli import main

    recs = _log(tmp_path)
    seg = _last_segment(tmp_path)
    _flip(seg, recs[-1].offset + fmt.FRAME_HEAD.size + fmt.BODY_MIN + 3)  # inside the payload
    damaged = seg.read_bytes()
    with pytest.raises(AuditError, match="a complete frame: damage.*audit repair"):
        AuditWriter(tmp_path).open()
    assert seg.read_bytes() == damaged
    assert main(["audit", "repair", str(tmp_path)]) == 0
    assert "cut" in capsys.readouterr().out
    out = list(iter_records(tmp_path))
    assert out[-1].payload["reason"].startswith("operator repair") and out[-1].payload["damage"].startswith("crc")
    assert out[-1].seq == 20 and verify(tmp_path).ok
    assert main(["audit", "repair", str(tmp_path)]) == 0
    assert "nothing to repair" in capsys.readouterr().out


def _signed_log(tmp_path: Path) -> tuple[Path, Path, Path]:
    from edgewarden.gateway.audit import checkpoint as ck

    key, export, log = tmp_path / "k.pem", tmp_path / "cp.jsonl", tmp_path / "log"
    ck.generate_keypair(key, tmp_path / "k.pem.pub")
    _log(log, signer=ck.Signer.from_file(key), checkpoint_export=export)  # clean stop: last record a checkpoint
    return log, export, tmp_path / "k.pem.pub"


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_record_an_exported_checkpoint_covers_is_never_cut(tmp_path: Path, damage: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The field report: after a clean stop the last record is the exported checkpoint;
    one flipped bit there (or a truncation) used to be cut on restart, leaving a log that
    could never verify against its exported checkpoints again."""
    from edgewarden.gateway.audit import checkpoint as ck
    from edgewarden.gateway.cli import main

    log, export, _ = _signed_log(tmp_path)
    last = list(fmt.walk(log))[-1]
    assert last.decode()["kind"] == "checkpoint"
    seg = _last_segment(log)
    if damage == "flip":
        _flip(seg, last.offset + fmt.FRAME_HEAD.size + fmt.BODY_MIN + 3)
    else:
        seg.write_bytes(seg.read_bytes()[:-5])
    damaged = seg.read_bytes()
    with pytest.raises(AuditError, match="refusing to start"):
        AuditWriter(log, checkpoint_export=export).open()
    assert main(["audit", "repair", str(log), "--checkpoints", str(export)]) == 74
    err = capsys.readouterr().err
    assert "was exported" in err and "Traceback" not in err
    assert seg.read_bytes() == damaged  # nothing cut
    # the damage stays visible to every verifier; the exported checkpoints still name it
    assert not verify(log, checkpoints=ck.read_exported(export)).ok


def test_a_torn_record_that_audit_export_copied_is_never_cut(tmp_path: Path) -> None:
    from edgewarden.gateway.cli import main

    _log(tmp_path / "log")
    assert main(["audit", "export", str(tmp_path / "log"), "-o", str(tmp_path / "copy.jsonl")]) == 0
    seg = _last_segment(tmp_path / "log")
    seg.write_bytes(seg.read_bytes()[:-5])  # looks torn, but it was read back and exported
    with pytest.raises(AuditError, match=r"exported\.json marks it exported"):
        AuditWriter(tmp_path / "log").open()
