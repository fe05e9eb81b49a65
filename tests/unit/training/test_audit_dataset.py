"""`edgewarden train from-audit`: a D4RL-layout dataset from the gateway's audit log."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from edgewarden.gateway.audit import AuditWriter
from edgewarden.gateway.cli import main
from edgewarden.training.datasets import DATASET_FORMAT_VERSION
from tests.helpers import write_two_run_log


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return write_two_run_log(tmp_path / "log", 1_800_000_000.0)


def test_from_audit_builds_training_transitions(log: Path, tmp_path: Path) -> None:
    from edgewarden.training.datasets import load

    out = tmp_path / "plant.h5"
    assert main(["train", "from-audit", str(log), "-o", str(out)]) == 0
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
        assert f.attrs["edgewarden_format_version"] == DATASET_FORMAT_VERSION
        assert json.loads(f.attrs["extra"])["rewards"] == "not recorded"


def test_from_audit_without_h5py_says_what_to_install(log: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "h5py", None)
    monkeypatch.delitem(sys.modules, "edgewarden.training.datasets", raising=False)
    assert main(["train", "from-audit", str(log), "-o", str(tmp_path / "x.h5")]) == 1
    err = capsys.readouterr().err
    assert "h5py" in err and "train" in err and "Traceback" not in err


def test_from_audit_of_a_log_without_auto_cycles_is_a_clear_error(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    with AuditWriter(tmp_path / "log") as w:
        w.append("mode", {"to": "READY"})
    assert main(["train", "from-audit", str(tmp_path / "log"), "-o", str(tmp_path / "x.h5")]) == 74
    assert "no consecutive AUTO cycle records" in capsys.readouterr().err


def test_from_audit_never_overwrites(log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "plant.h5"
    out.write_bytes(b"precious")
    assert main(["train", "from-audit", str(log), "-o", str(out)]) == 74
    assert "exists" in capsys.readouterr().err and out.read_bytes() == b"precious"


def test_reward_track_is_the_next_tracking_error(log: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """--reward-track PV=SP: reward = -|PV - SP| of the next observation; a tag that is not
    an observation is refused by name, and so is a malformed pair."""
    from edgewarden.training.datasets import load

    out = tmp_path / "tracked.h5"
    assert main(["train", "from-audit", str(log), "-o", str(out), "--reward-track", "T=CA"]) == 0
    ds = load(out)
    np.testing.assert_allclose(ds.rewards, -np.abs(ds.next_observations[:, 0] - ds.next_observations[:, 1]))
    import h5py

    with h5py.File(out) as f:
        extra = json.loads(f.attrs["extra"])
    assert extra["rewards"] == "r = -|T - CA| (edgewarden/training/reward.py)"
    assert extra["reward_spec"]["track"] == [["T", "CA"]]
    assert main(["train", "from-audit", str(log), "-o", str(tmp_path / "x.h5"), "--reward-track", "T=Tj"]) == 1
    assert "Tj is not an observation (observations: T, CA)" in capsys.readouterr().err
    assert main(["train", "from-audit", str(log), "-o", str(tmp_path / "y.h5"), "--reward-track", "T"]) == 1
    assert "write it PV=SP" in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "y.h5").exists()


def test_move_and_soft_limit_terms_and_a_constant_setpoint(log: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The reward expression for a plant with no setpoint tag: |T - 350|, move effort as a
    share of the configured span (a run's first row moves from itself), distance beyond
    soft limits; the expression is stored with the data, bad terms are refused by name."""
    from edgewarden.training.datasets import load

    out = tmp_path / "expr.h5"
    assert main(["train", "from-audit", str(log), "-o", str(out), "--reward-track", "T=350", "--reward-move", "2",
                 "--reward-limit", "CA=0.1:0.2", "--reward-limit-weight", "10"]) == 0
    ds = load(out)
    t, ca, a = ds.next_observations[:, 0], ds.next_observations[:, 1], ds.actions[:, 0].astype(np.float64)
    span = ds.meta.action_high[0] - ds.meta.action_low[0]
    prev = np.concatenate([a[:1], a[:-1]])
    starts = np.concatenate([[True], ds.timeouts[:-1]])
    prev[starts] = a[starts]
    beyond = np.maximum(0.0, np.maximum(ca - 0.2, 0.1 - ca))
    expected = -np.abs(t - 350.0) - 2.0 * np.abs(a - prev) / span - 10.0 * beyond
    np.testing.assert_allclose(ds.rewards, expected, rtol=1e-5)
    assert np.abs(a - prev).max() > 0  # the move term was exercised
    assert ds.meta.extra["reward_spec"] == {"track": [["T", 350.0]], "move": 2.0, "limits": [["CA", 0.1, 0.2]],
                                            "limit_weight": 10.0}
    for bad, says in ((["--reward-limit", "CA=0.2"], "write it PV=LOW:HIGH"),
                      (["--reward-limit", "CA=0.3:0.2"], "LOW < HIGH"),
                      (["--reward-limit", "X=0:1"], "reward limit X: not an observation"),
                      (["--reward-move", "-1"], "reward move -1.0: must be a finite number"),
                      (["--reward-track", "T=inf"], "the setpoint must be a finite number or a tag")):
        assert main(["train", "from-audit", str(log), "-o", str(tmp_path / "bad.h5"), *bad]) == 1
        assert says in capsys.readouterr().err
        assert not (tmp_path / "bad.h5").exists()


def test_a_window_after_the_start_keeps_names_units_and_the_controller(log: Path, tmp_path: Path) -> None:
    """--since after the gateway started (the docs' own pattern): the config_load and
    model_load records lie before the window and still name the data."""
    from edgewarden.training.datasets import load

    out = tmp_path / "window.h5"
    assert main(["train", "from-audit", str(log), "-o", str(out), "--since", str(1_800_000_000.0 + 14)]) == 0
    ds = load(out)
    assert len(ds) == 4  # cycles 13..16, each with its next (17 is MANUAL: its obs ends the run)
    assert ds.meta.observation_tags == ("T", "CA") and ds.meta.action_units == ("L/min",)
    assert ds.meta.plant == "cstr-1" and ds.meta.behaviour_policy == "onnx:" + "ab" * 32


def test_a_constant_setpoint_and_the_configured_action_bounds(tmp_path: Path) -> None:
    """A plant whose setpoint is not a tag: --reward-track PV=VALUE. The actions' bounds are
    the configured ones the gateway recorded, not the data's extremes."""
    from edgewarden.training.datasets import load

    with AuditWriter(tmp_path / "log") as w:
        w.append("config_load", {"gateway": "line7", "obs_tags": ["T"], "act_tags": ["coolant"], "obs_units": ["K"],
                                 "act_units": ["L/min"], "act_low": [0.0], "act_high": [200.0], "t_wall": 1.0})
        for n in range(6):
            w.append("cycle", {"n": n, "mode": "AUTO", "obs": [348.0 + n], "written": [100.0 + n], "t_wall": 2.0 + n})
    out = tmp_path / "const.h5"
    assert main(["train", "from-audit", str(tmp_path / "log"), "-o", str(out), "--reward-track", "T=350"]) == 0
    ds = load(out)
    np.testing.assert_allclose(ds.rewards, -np.abs(ds.next_observations[:, 0] - 350.0))
    assert ds.meta.action_low == (0.0,) and ds.meta.action_high == (200.0,)
    import h5py

    with h5py.File(out) as f:
        assert json.loads(f.attrs["extra"])["action_bounds"] == "configured ([safety.actions])"
    assert main(["train", "from-audit", str(tmp_path / "log"), "-o", str(tmp_path / "n.h5"),
                 "--reward-track", "T=nan"]) == 1


def test_a_log_without_recorded_bounds_uses_the_data_extremes_and_says_so(log: Path, tmp_path: Path) -> None:
    from edgewarden.training.datasets import load

    out = tmp_path / "old.h5"
    assert main(["train", "from-audit", str(log), "-o", str(out)]) == 0
    ds = load(out)
    assert ds.meta.action_low == (100.0,) and ds.meta.action_high == (116.0,)
    import h5py

    with h5py.File(out) as f:
        assert json.loads(f.attrs["extra"])["action_bounds"] == "the data's own extremes"
