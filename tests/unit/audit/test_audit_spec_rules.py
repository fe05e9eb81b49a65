"""The rules docs/audit-format.md states and an independent verifier enforces: strict
JSON payloads, the fields every record carries, key ids, empty directories and the
exported checkpoint file. Each case through ``edgewarden audit verify`` (exit codes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgewarden.gateway.audit import AuditWriter
from edgewarden.gateway.audit import checkpoint as ck
from edgewarden.gateway.audit import record as fmt
from edgewarden.gateway.cli import main


def _raw_log(directory: Path, payloads: list[bytes]) -> None:
    """A log whose records carry exactly these payload bytes (framing and chain intact)."""
    directory.mkdir()
    data, head = fmt.pack_header(fmt.FIRST_SEQ, fmt.GENESIS_HASH), fmt.GENESIS_HASH
    for i, payload in enumerate(payloads):
        frame, head = fmt.encode_frame(fmt.FIRST_SEQ + i, head, payload)
        data += frame
    (directory / fmt.segment_name(fmt.FIRST_SEQ)).write_bytes(data)


GOOD = b'{"kind":"mode","t_mono":1.5,"t_wall":1767225600.25}'


def _verify(*args: object, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["audit", "verify", *map(str, args)])
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    return code, out.out + out.err


def test_a_well_formed_raw_log_verifies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _raw_log(tmp_path / "log", [GOOD, GOOD])
    assert _verify(tmp_path / "log", capsys=capsys)[0] == 0


@pytest.mark.parametrize("payload, says", [
    (b'{"kind":"cycle","t_mono":1.5,"t_wall":1767225600.25,"x":NaN}', "NaN is not JSON"),
    (b'{"kind":"cycle","t_mono":1.5,"t_wall":1767225600.25,"x":-Infinity}', "-Infinity is not JSON"),
    (b'{}', "no kind"),
    (b'{"kind":"","t_mono":1.5,"t_wall":1.0}', "no kind"),
    (b'{"kind":"mode","t_wall":1767225600.25}', "no t_mono"),
    (b'{"kind":"mode","t_mono":1.5,"t_wall":"yesterday"}', "no t_wall"),
    (b'{"kind":"mode","t_mono":true,"t_wall":1.0}', "no t_mono"),
    (b'[1,2]', "not a JSON object"),
    (b'{"kind":"mode","t_mono":1.5,"t_wall":1.0', "not a JSON object"),
])
def test_payloads_that_break_rule_6_fail(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         payload: bytes, says: str) -> None:
    _raw_log(tmp_path / "log", [GOOD, payload, GOOD])
    code, out = _verify(tmp_path / "log", capsys=capsys)
    assert code == 1 and "FAILED" in out and says in out and "seq 2" in out, out


def test_an_empty_or_missing_directory_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    code, out = _verify(tmp_path / "empty", capsys=capsys)
    assert code == 1 and "no audit segments" in out
    code, out = _verify(tmp_path / "nowhere", capsys=capsys)
    assert code == 1 and "not a directory" in out


@pytest.fixture
def signed(tmp_path: Path) -> tuple[Path, Path, Path]:
    key = tmp_path / "k.pem"
    ck.generate_keypair(key, tmp_path / "k.pem.pub")
    export = tmp_path / "cp.jsonl"
    with AuditWriter(tmp_path / "log", signer=ck.Signer.from_file(key), checkpoint_export=export) as w:
        for i in range(5):
            w.append("cycle", {"i": i})
    return tmp_path / "log", tmp_path / "k.pem.pub", export


def test_key_id_must_be_the_given_keys(tmp_path: Path, signed: tuple[Path, Path, Path],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    log, pub, export = signed
    assert _verify(log, "--pubkey", pub, "--checkpoints", export, capsys=capsys)[0] == 0
    ck.generate_keypair(tmp_path / "other.pem", tmp_path / "other.pem.pub")
    code, out = _verify(log, "--pubkey", tmp_path / "other.pem.pub", capsys=capsys)
    assert code == 1 and "not by the given key" in out


@pytest.mark.parametrize("garbage", ["not json", '{"seq": 3}', "[]"])
def test_a_garbage_line_in_the_checkpoint_file_is_a_verification_failure(
        signed: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str], garbage: str) -> None:
    log, pub, export = signed
    lines = export.read_text().splitlines()
    export.write_text("\n".join([garbage, *lines]) + "\n")
    code, out = _verify(log, "--pubkey", pub, "--checkpoints", export, capsys=capsys)
    assert code == 1 and "FAILED" in out and "line 1: not a checkpoint" in out, out


def test_an_unreadable_checkpoint_file_is_an_input_error(signed: tuple[Path, Path, Path],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    log, pub, export = signed
    code, out = _verify(log, "--pubkey", pub, "--checkpoints", export.with_name("missing"), capsys=capsys)
    assert code == 74 and "checkpoint file" in out and "file not found" in out


def test_the_last_line_without_newline_is_ignored(signed: tuple[Path, Path, Path],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    log, pub, export = signed
    text = export.read_text()
    export.write_text(text + json.dumps({"seq": 99})[:7])  # an export cut short
    assert _verify(log, "--pubkey", pub, "--checkpoints", export, capsys=capsys)[0] == 0
