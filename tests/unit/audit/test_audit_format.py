"""The documented format: worked example, the doc's own minimal verifier, and the CLI."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from edgewarden.gateway.audit import AuditWriter, verify
from edgewarden.gateway.audit import cli as audit_cli
from edgewarden.gateway.audit import record as fmt
from edgewarden.gateway.errors import AuditError

DOC = Path(__file__).resolve().parents[3] / "docs" / "audit-format.md"


def test_worked_example_matches_the_doc() -> None:
    doc = DOC.read_text()
    assert fmt.pack_header(1, fmt.GENESIS_HASH)[-4:].hex() in doc
    p1 = fmt.encode_payload({"kind": "mode", "t_wall": 1767225600.25, "t_mono": 12.5, "mode": "AUTO",
                             "actor": "op1", "reason": "start", "x": float("nan")})
    assert p1.decode() in doc
    f1, h1 = fmt.encode_frame(1, fmt.GENESIS_HASH, p1)
    assert f1[:8].hex() == "00000093e757853e" and h1.hex() in doc
    p2 = fmt.encode_payload({"kind": "cycle", "t_wall": 1767225600.26, "t_mono": 12.51, "obs": {"TT101": 71.25}})
    f2, h2 = fmt.encode_frame(2, h1, p2)
    assert p2.decode() in doc and f2[:8].hex() == "00000074358a1304" and h2.hex() in doc


def test_the_docs_minimal_verifier_agrees(tmp_path: Path) -> None:
    code = re.search(r"A minimal verifier.*?```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    ns: dict = {}
    exec(compile(code, str(DOC), "exec"), ns)  # noqa: S102 - our own documentation
    with AuditWriter(tmp_path, segment_max_bytes=2048) as w:
        for i in range(60):
            w.append("cycle", {"i": i, "v": [1.5, float("inf")], "name": "Tür"})
    result = verify(tmp_path)
    assert ns["verify"](tmp_path) == (60, result.head)


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    audit_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


def test_cli_verify_and_tail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with AuditWriter(tmp_path) as w:
        for i in range(5):
            w.append("cycle", {"i": i})
    assert _run(["audit", "verify", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK: 5 records") and verify(tmp_path).head in out
    assert _run(["audit", "tail", str(tmp_path), "-n", "2"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["seq"] for x in lines] == [4, 5] and lines[1]["payload"]["i"] == 4

    seg = fmt.list_segments(tmp_path)[0][1]
    raw = bytearray(seg.read_bytes())
    raw[fmt.HEADER_SIZE + 20] ^= 0xFF
    seg.write_bytes(bytes(raw))
    assert _run(["audit", "verify", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAILED:") and f"{seg.name}, offset {fmt.HEADER_SIZE}, seq 1" in out
    with pytest.raises(AuditError, match="damaged"):
        _run(["audit", "tail", str(tmp_path)])


def test_cli_missing_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["audit", "verify", str(tmp_path / "nope")]) == 1
    assert "not a directory" in capsys.readouterr().out
    with pytest.raises(AuditError, match="not a directory"):
        _run(["audit", "tail", str(tmp_path / "nope")])
