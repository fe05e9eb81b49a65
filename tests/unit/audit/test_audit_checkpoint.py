"""Signed checkpoints: keys, signing, export, and what a verifier holding the public key catches."""

from __future__ import annotations

import json
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgewarden.gateway.audit import AuditWriter, verify
from edgewarden.gateway.audit import checkpoint as ck
from edgewarden.gateway.audit import record as fmt
from edgewarden.gateway.cli import main
from edgewarden.gateway.errors import AuditError

N_RECORDS = 120
EVERY = 25


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("keys")
    ck.generate_keypair(d / "signing.key", d / "signing.pub")
    return d / "signing.key", d / "signing.pub"


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory, keys: tuple[Path, Path]) -> tuple[Path, Path]:
    """A log of N_RECORDS cycle records over several segments, a checkpoint every EVERY."""
    d = tmp_path_factory.mktemp("signed")
    log, export = d / "log", d / "checkpoints.jsonl"
    with AuditWriter(log, segment_max_bytes=2048, signer=ck.Signer.from_file(keys[0]),
                     checkpoint_every_records=EVERY, checkpoint_export=export) as w:
        for i in range(N_RECORDS):
            w.append("cycle", {"i": i, "obs": [20.0 + i / 8]})
            if i % 10 == 9:
                w.flush()
    (log / ".lock").unlink()
    return log, export


def _pub(keys: tuple[Path, Path]) -> ck.Ed25519PublicKey:
    return ck.load_public_key(keys[1])


def test_keygen_writes_a_private_key_only_the_owner_can_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "keygen", str(tmp_path / "k")]) == 0
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600
    assert "key id" in capsys.readouterr().out
    ck.load_public_key(tmp_path / "k.pub")
    assert main(["audit", "keygen", str(tmp_path / "k")]) == 74  # never overwrites silently
    assert "refusing to overwrite" in capsys.readouterr().err
    (tmp_path / "k").chmod(0o644)
    with pytest.raises(AuditError, match="readable by group or others"):
        ck.load_private_key(tmp_path / "k")


def test_checkpoints_are_in_the_log_exported_and_verify(signed: tuple[Path, Path], keys: tuple[Path, Path]) -> None:
    log, export = signed
    cps = ck.read_exported(export)
    assert len(cps) >= N_RECORDS // EVERY
    result = verify(log, pubkey=_pub(keys), checkpoints=cps)
    assert result.ok, result.error
    assert result.checkpoints == len(cps) and result.exported_checked == len(cps)
    assert result.signed_through == result.last_seq - 1  # a clean close ends with a checkpoint
    for cp in cps:
        assert cp.verify(_pub(keys)) is None


def test_another_key_is_refused(signed: tuple[Path, Path], tmp_path: Path) -> None:
    ck.generate_keypair(tmp_path / "other", tmp_path / "other.pub")
    result = verify(signed[0], pubkey=ck.load_public_key(tmp_path / "other.pub"))
    assert not result.ok and "not by the given key" in result.error


def test_a_log_without_checkpoints_fails_with_a_key(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    with AuditWriter(tmp_path / "log") as w:
        w.append("cycle", {"i": 1})
    assert verify(tmp_path / "log").ok
    result = verify(tmp_path / "log", pubkey=_pub(keys))
    assert not result.ok and "nothing here is signed" in result.error


def test_a_rewritten_log_with_recomputed_hashes_is_caught(signed: tuple[Path, Path], keys: tuple[Path, Path],
                                                          tmp_path: Path) -> None:
    """Whoever rewrites the whole log cannot re-sign: the exported checkpoints and signatures show it."""
    log, export = signed
    forged = tmp_path / "forged"
    with AuditWriter(forged, segment_max_bytes=2048) as w:  # same records, one value changed, no key
        for i in range(N_RECORDS):
            w.append("cycle", {"i": i, "obs": [20.0 + i / 8 + (1.0 if i == 3 else 0.0)]})
    assert verify(forged).ok  # the chain alone cannot tell
    result = verify(forged, pubkey=_pub(keys), checkpoints=ck.read_exported(export))
    assert not result.ok


def test_a_forged_checkpoint_record_is_caught(signed: tuple[Path, Path], keys: tuple[Path, Path],
                                              tmp_path: Path) -> None:
    log = tmp_path / "log"
    shutil.copytree(signed[0], log)
    cps = [r for r in fmt.walk(log) if r.decode()["kind"] == "checkpoint"]
    rec = cps[-1]  # the last: a later checkpoint would already show the changed hash without a key
    payload = rec.decode()
    payload["t_wall_ns"] += 1  # a valid-looking checkpoint whose signature no longer matches
    _replace_record(log, rec, fmt.encode_payload(payload))
    assert verify(log).ok  # chain intact after re-chaining everything behind it
    result = verify(log, pubkey=_pub(keys))
    assert not result.ok and "bad signature" in result.error and f"seq {rec.seq}" in result.error


def _replace_record(log: Path, target: fmt.Record, payload: bytes) -> None:
    """Rewrite the log with one payload changed and every later hash recomputed (an attacker's job)."""
    records = [(r.seq, r.payload) for r in fmt.walk(log)]
    bounds = [seq for seq, _ in fmt.list_segments(log)]
    for _, p in fmt.list_segments(log):
        p.unlink()
    head = fmt.GENESIS_HASH
    out: dict[int, bytearray] = {}
    current = None
    for seq, data in records:
        if seq in bounds:
            current = out.setdefault(seq, bytearray(fmt.pack_header(seq, head)))
        assert current is not None
        frame, head = fmt.encode_frame(seq, head, payload if seq == target.seq else data)
        current += frame
    for first, data in out.items():
        (log / fmt.segment_name(first)).write_bytes(bytes(data))


SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(data=st.data())
def test_truncation_past_the_last_exported_checkpoint_is_detected(signed: tuple[Path, Path],
                                                                  keys: tuple[Path, Path],
                                                                  data: st.DataObject) -> None:
    """Cut the log at any byte after (or inside) the record the last exported checkpoint covers."""
    log, export = signed
    cps = ck.read_exported(export)
    last_cp = cps[-1]
    # every byte position of the log as (segment index, offset), from the covered record on
    positions = []
    segs = fmt.list_segments(log)
    covered = next(r for r in fmt.walk(log) if r.seq == last_cp.seq)
    for i, (_, path) in enumerate(segs):
        start = covered.offset if path == covered.path else (0 if path.name > covered.path.name else None)
        if start is not None:
            positions.append((i, start, path.stat().st_size))
    seg_i, lo, hi = positions[data.draw(st.integers(0, len(positions) - 1))]
    cut = data.draw(st.integers(lo, hi - 1))
    whole_segment = data.draw(st.booleans()) and cut == 0 and seg_i > 0
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "log"
        shutil.copytree(log, d)
        victims = fmt.list_segments(d)
        for _, p in victims[seg_i + 1:]:
            p.unlink()
        path = victims[seg_i][1]
        if whole_segment:
            path.unlink()
        else:
            raw = path.read_bytes()
            path.write_bytes(raw[:cut])
        result = verify(d, pubkey=_pub(keys), checkpoints=cps)
        assert not result.ok, (seg_i, cut)


def test_truncation_cleanly_at_a_record_boundary_is_named(signed: tuple[Path, Path], keys: tuple[Path, Path],
                                                          tmp_path: Path) -> None:
    log = tmp_path / "log"
    shutil.copytree(signed[0], log)
    cps = ck.read_exported(signed[1])
    covered = next(r for r in fmt.walk(log) if r.seq == cps[-1].seq)
    for _, p in fmt.list_segments(log):
        if p.name > covered.path.name:
            p.unlink()
    with covered.path.open("r+b") as f:
        f.truncate(covered.offset)  # the covered record and everything after it are gone
    assert verify(log).ok  # shorter, and intact by itself
    result = verify(log, pubkey=_pub(keys), checkpoints=cps)
    assert not result.ok and "truncation" in result.error and f"seq {cps[-1].seq}" in result.error


def test_verify_cli_with_pubkey_and_checkpoints(signed: tuple[Path, Path], keys: tuple[Path, Path],
                                                tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log, export = signed
    assert main(["audit", "verify", str(log), "--pubkey", str(keys[1]), "--checkpoints", str(export)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK:") and "signatures checked" in out and "matched in the log" in out
    # `audit checkpoints` re-exports the same lines from the log itself
    assert main(["audit", "checkpoints", str(log), "-o", str(tmp_path / "again.jsonl")]) == 0
    assert (tmp_path / "again.jsonl").read_text() == export.read_text()
    bad = tmp_path / "bad.jsonl"
    line = json.loads(export.read_text().splitlines()[-1])
    line["seq"] += 10_000
    bad.write_text(json.dumps(line) + "\n")
    assert main(["audit", "verify", str(log), "--pubkey", str(keys[1]), "--checkpoints", str(bad)]) == 1
    assert "bad signature" in capsys.readouterr().out


def test_time_based_checkpoints_and_export_failures_are_not_fatal(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    got: list[ck.Checkpoint] = []
    w = AuditWriter(tmp_path / "log", commit_interval_s=0.002, signer=ck.Signer.from_file(keys[0]),
                    checkpoint_every_records=10**6, checkpoint_every_s=0.01,
                    checkpoint_export=tmp_path / "no-such-dir" / "cp.jsonl", on_checkpoint=got.append)
    with w:
        import time

        for i in range(5):
            w.append("cycle", {"i": i})
            time.sleep(0.03)
        w.flush()
        stats = w.stats()
    assert stats.checkpoints >= 3 and stats.checkpoint_export_errors >= 3 and w.failed is None
    assert len(got) >= 4  # the close adds one
    assert verify(tmp_path / "log", pubkey=_pub(keys), checkpoints=got).ok


def test_a_torn_export_line_is_cut_before_the_next_export(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    export = tmp_path / "cp.jsonl"
    export.write_text('{"seq": 1, "head": "ab')  # a crash in the middle of an export write
    with AuditWriter(tmp_path / "log", signer=ck.Signer.from_file(keys[0]), checkpoint_export=export) as w:
        w.append("cycle", {"i": 1})
    cps = ck.read_exported(export)
    assert len(cps) == 1 and verify(tmp_path / "log", pubkey=_pub(keys), checkpoints=cps).ok
