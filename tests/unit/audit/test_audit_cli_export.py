"""`audit show`, `audit tail` and `audit export` (JSON lines and the HDF5 training layout)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from gateway.audit import AuditWriter
from gateway.cli import main

T0 = 1_800_000_000.0


@pytest.fixture
def log(tmp_path: Path) -> Path:
    """Two AUTO runs (cycles 0..9, then 12..16 after a trip) with MANUAL cycles between."""
    d = tmp_path / "log"
    with AuditWriter(d) as w:
        w.append("config_load", {"gateway": "cstr-1", "obs_tags": ["T", "CA"], "act_tags": ["coolant"],
                                 "obs_units": ["K", "mol/L"], "act_units": ["L/min"],
                                 "t_wall": T0})
        w.append("model_load", {"sha256": "ab" * 32, "t_wall": T0})
        for n in range(20):
            mode = "AUTO" if n < 10 or 12 <= n < 17 else "MANUAL"
            written = [100.0 + n] if mode == "AUTO" else None
            w.append("cycle", {"n": n, "mode": mode, "obs": [350.0 + n, 0.5], "written": written,
                               "verdict": "ok", "t_wall": T0 + 1 + n})
            if n == 10:
                w.append("trip", {"code": "hard_limit:T:high", "t_wall": T0 + 1 + n})
    return d


def _lines(text: str) -> list[dict]:
    return [json.loads(x) for x in text.splitlines()]


def test_show_marks_writes_the_device_did_not_acknowledge(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "log"
    with AuditWriter(d) as w:
        w.append("cycle", {"n": 0, "written": [1.0], "ack": ["ok", "ok"]})
        w.append("cycle", {"n": 1, "written": [200.0], "ack": ["timeout", "ok"]})
        w.append("trip", {"code": "comms_loss", "safe_write": {"written": [200.0], "ack": ["failed: x", "ok"]}})
        w.append("cycle", {"n": 2, "written": None, "ack": ["not_attempted: not connected"]})
        w.append("cycle", {"n": 3, "written": [5.0], "ack": "sent", "prev_ack": ["ok", "ok"]})
    assert main(["audit", "show", str(d)]) == 0
    out = capsys.readouterr()
    assert len(_lines(out.out)) == 5
    assert "3 record(s) with a write the device did not acknowledge (seq 2..4)" in out.err  # seq counts from 1
    assert main(["audit", "show", str(d), "--failed-writes"]) == 0
    shown = [r["payload"].get("n", r["payload"]["kind"]) for r in _lines(capsys.readouterr().out)]
    assert shown == [1, "trip", 2]


def test_show_filters_by_time_and_kind(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "show", str(log), "--kind", "trip", "--kind", "model_load"]) == 0
    assert [r["payload"]["kind"] for r in _lines(capsys.readouterr().out)] == ["model_load", "trip"]
    assert main(["audit", "show", str(log), "--since", str(T0 + 5), "--until", "2027-01-15T08:00:15Z",
                 "--kind", "cycle"]) == 0
    got = [r["payload"]["n"] for r in _lines(capsys.readouterr().out)]
    assert got == list(range(4, 14))
    assert main(["audit", "show", str(log), "--since", "yesterday"]) == 74
    assert "ISO-8601" in capsys.readouterr().err


def test_tail(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "tail", str(log), "-n", "2"]) == 0
    assert [r["payload"]["n"] for r in _lines(capsys.readouterr().out)] == [18, 19]


def test_export_jsonl_to_stdout(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "export", str(log)]) == 0
    lines = _lines(capsys.readouterr().out)
    assert [r["seq"] for r in lines] == list(range(1, len(lines) + 1)) and len(lines) == 23
    assert not (log / "exported.json").exists()  # stdout is not a copy we can vouch for


def test_export_hdf5_builds_training_transitions(log: Path, tmp_path: Path) -> None:
    from training.datasets import load

    out = tmp_path / "plant.h5"
    assert main(["audit", "export", str(log), "--format", "hdf5", "-o", str(out)]) == 0
    ds = load(out)
    # a row per AUTO cycle whose next cycle exists (MANUAL or not: its obs is the next
    # observation); a non-AUTO next cycle ends the run. Run 1: 0..9 (10 rows), run 2: 12..16 (5)
    assert len(ds) == 15
    assert ds.meta.plant == "cstr-1"
    assert ds.meta.observation_tags == ("T", "CA") and ds.meta.action_tags == ("coolant",)
    assert ds.meta.observation_units == ("K", "mol/L") and ds.meta.action_units == ("L/min",)
    assert ds.meta.behaviour_policy == "onnx:" + "ab" * 32
    np.testing.assert_allclose(ds.observations[0], [350.0, 0.5])
    np.testing.assert_allclose(ds.actions[0], [100.0])
    np.testing.assert_allclose(ds.next_observations[0], [351.0, 0.5])
    np.testing.assert_allclose(ds.observations[10], [362.0, 0.5])
    assert ds.timeouts.tolist() == [False] * 9 + [True] + [False] * 4 + [True]
    assert not ds.terminals.any()
    import h5py

    with h5py.File(out) as f:
        assert f.attrs["edgewarden_format_version"] == 1
        assert json.loads(f.attrs["extra"])["rewards"] == "not recorded"


def test_export_hdf5_without_h5py_says_what_to_install(log: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "h5py", None)
    monkeypatch.delitem(sys.modules, "training.datasets", raising=False)
    assert main(["audit", "export", str(log), "--format", "hdf5", "-o", str(tmp_path / "x.h5")]) == 74
    err = capsys.readouterr().err
    assert "h5py" in err and "train" in err and "Traceback" not in err


def test_export_hdf5_of_a_log_without_auto_cycles_is_a_clear_error(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    with AuditWriter(tmp_path / "log") as w:
        w.append("mode", {"to": "READY"})
    assert main(["audit", "export", str(tmp_path / "log"), "--format", "hdf5", "-o", str(tmp_path / "x.h5")]) == 74
    assert "no consecutive AUTO cycle records" in capsys.readouterr().err
