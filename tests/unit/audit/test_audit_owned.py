"""``append_owned``: the cycle hands its record over and the writer thread encodes it.
The records read back exactly as those of ``append``; one that cannot be encoded becomes an
``audit_encode_error`` record with its seq, and the chain verifies either way."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgewarden.gateway.audit import AuditWriter, iter_records, verify
from edgewarden.gateway.errors import AuditError
from tests.unit.audit.test_audit_payload import as_recorded, payloads

TIMES = ("t_wall", "t_mono")


def _fields(payload: dict) -> dict:
    return {k: v for k, v in payload.items() if k not in TIMES}


@settings(max_examples=40, deadline=None)
@given(st.lists(payloads.filter(lambda p: not {"kind", *TIMES} & set(p)), min_size=1, max_size=6))
def test_owned_records_read_back_as_appended_ones(batch: list[dict]) -> None:
    with tempfile.TemporaryDirectory() as d:
        with AuditWriter(Path(d), commit_interval_s=0.001) as w:
            for p in batch:
                w.append("cycle", p)
                w.append_owned("cycle", dict(p))
        assert verify(Path(d)).ok
        recs = [r.payload for r in iter_records(Path(d))]
    for i, p in enumerate(batch):
        by_append, by_owned = recs[2 * i], recs[2 * i + 1]
        assert _fields(by_append) == _fields(by_owned) == {**as_recorded(p), "kind": "cycle"}
        assert all(isinstance(by_owned[t], float) for t in TIMES)


def test_unencodable_owned_payload_is_recorded_as_an_error_in_its_place(tmp_path: Path) -> None:
    with AuditWriter(tmp_path, commit_interval_s=0.001) as w:
        a = w.append_owned("cycle", {"n": 1, "obs": [1.0, math.nan]})
        b = w.append_owned("cycle", {"n": 2, "bad": object()})
        c = w.append_owned("cycle", {"n": 3})
    res = verify(tmp_path)
    assert res.ok and res.records == 3
    recs = {r.seq: r.payload for r in iter_records(tmp_path)}
    assert recs[a]["obs"] == [1.0, "NaN"]
    assert recs[b]["kind"] == "audit_encode_error" and recs[b]["of_kind"] == "cycle"
    assert f"record {b} ('cycle') cannot be encoded" in recs[b]["error"]
    assert recs[c] == {**recs[c], "n": 3, "kind": "cycle"}


def test_owned_append_on_a_closed_log_is_refused(tmp_path: Path) -> None:
    w = AuditWriter(tmp_path).open()
    w.close()
    with pytest.raises(AuditError, match="not open"):
        w.append_owned("cycle", {"n": 1})
