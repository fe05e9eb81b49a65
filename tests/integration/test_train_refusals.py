"""The trainer refuses nonsense before it spends anything: every hyperparameter is typed
and range-checked (unknown keys named with the valid ones), counts are checked, a run is
never silently replaced nor resumed with another algorithm or settings, a bad dataset is
named before workers spawn, and a policy is not rolled out on a twin it cannot read."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgewarden.gateway.cli import main
from tests.helpers import write_two_run_log


@pytest.fixture
def data(tmp_path: Path) -> Path:
    out = tmp_path / "d.h5"
    assert main(["train", "from-audit", str(write_two_run_log(tmp_path / "log", 1_800_000_000.0)), "-o",
                 str(out), "--plant", "cstr"]) == 0
    return out


def fit(data: Path, run: Path, *extra: str, algo: str = "td3bc", steps: int = 4) -> int:
    return main(["train", "fit", "--algo", algo, "--dataset", str(data), "--steps", str(steps), "--out", str(run),
                 "--set", "hidden=[8]", "--set", "batch_size=4", "--no-progress", "--log-every", "2",
                 "--checkpoint-every", "2", *extra])


@pytest.mark.parametrize(("algo", "setting", "message"), [
    ("td3bc", "policy_freq=0", "policy_freq: Input should be greater than or equal to 1 (got 0)"),
    ("td3bc", "batch_size=0", "batch_size: Input should be greater than or equal to 1 (got 0)"),
    ("iql", "expectile=1.5", "expectile: Input should be less than 1 (got 1.5)"),
    ("iql", "hidden=abc", "hidden: Input should be a valid tuple (got 'abc')"),
    ("td3bc", "alpha=abc", "alpha: Input should be a valid number"),
    ("bc", "gamma=0.9", "gamma: bc has no such setting"),
])
def test_bad_settings_are_refused_by_name(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          algo: str, setting: str, message: str) -> None:
    run = tmp_path / "run"
    assert fit(data, run, "--set", setting, algo=algo) == 78
    err = capsys.readouterr().err
    assert message in err and f"--set for {algo}: " in err and "(its settings: hidden, " in err
    assert "Traceback" not in err and not run.exists()  # nothing written


def test_counts_runs_and_resumes(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    for steps in (0, -5):
        assert fit(data, run, steps=steps) == 1
        assert "--steps must be at least 1" in capsys.readouterr().err
    assert fit(data, run, "--resume") == 1
    assert "holds no checkpoint (last.pt) to continue" in capsys.readouterr().err
    assert fit(data, run) == 0
    capsys.readouterr()
    assert fit(data, run) == 1  # not silently replaced
    assert "already holds a run (last.pt, step 4): --resume continues it, --force replaces it" in \
        capsys.readouterr().err
    assert fit(data, run, "--resume", algo="iql", steps=8) == 1
    assert "is a td3bc run, not iql" in capsys.readouterr().err
    assert fit(data, run, "--resume", "--set", "alpha=100", steps=8) == 1
    assert "alpha=100.0 (the run's: 2.5)" in capsys.readouterr().err
    assert fit(data, run, "--resume", steps=4) == 1
    assert "already at step 4" in capsys.readouterr().err
    assert fit(data, run, "--resume", "--seed", "7", steps=8) == 1  # not silently ignored
    assert "with its own random streams (seed 0); --seed 7 would not be used" in capsys.readouterr().err
    assert fit(data, run, "--resume", "--seed", "0", steps=8) == 0
    assert fit(data, run, "--force") == 0
    assert fit(tmp_path / "none.h5", tmp_path / "r2", "--nproc", "2") != 0
    assert "none.h5" in capsys.readouterr().err and not (tmp_path / "r2").exists()  # before any worker


def test_a_policy_is_not_rolled_out_on_a_twin_it_cannot_read(data: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert fit(data, run) == 0
    capsys.readouterr()
    assert main(["train", "evaluate", str(run), "--episodes", "1"]) == 1
    err = capsys.readouterr().err
    assert "the policy reads T, CA; the cstr twin has T, CA, Tj, T_sp" in err and "Traceback" not in err
    assert fit(data, tmp_path / "ev", "--eval-every", "2") == 1  # refused before a step is spent
    assert "--eval-every: the policy reads T, CA; the cstr twin has" in capsys.readouterr().err
    assert not (tmp_path / "ev").exists()


def test_degenerate_actions_are_named_and_refused_for_a_critic(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """An action that never varies, one on a bound a third of the time: inspect names both;
    TD3+BC (a critic that extrapolates) is refused unless asked, IQL is warned."""
    import numpy as np

    from edgewarden.training.datasets import DatasetMeta, write

    rng = np.random.default_rng(0)
    n = 300
    acts = np.stack([rng.uniform(0, 200, n), np.full(n, 100.0)], 1).astype(np.float32)
    acts[: n // 3, 0] = 0.0
    ends = np.zeros(n, bool)
    ends[[99, 199, 299]] = True
    data = tmp_path / "flat.h5"
    write(data, {"observations": rng.normal(size=(n, 3)).astype(np.float32), "actions": acts,
                 "rewards": rng.normal(size=n).astype(np.float32),
                 "next_observations": rng.normal(size=(n, 3)).astype(np.float32),
                 "terminals": np.zeros(n, bool), "timeouts": ends},
          DatasetMeta(plant="line3", observation_tags=("a", "b", "c"), observation_units=("", "", ""),
                      action_tags=("valve", "feed"), action_units=("%", "L/min"), action_low=(0.0, 0.0),
                      action_high=(200.0, 200.0)))
    assert main(["train", "inspect", str(data)]) == 0
    out = capsys.readouterr().out
    assert "300 rows, plant line3, 3 episodes" in out and "at low 33.3%" in out
    assert "warning: valve sits on its lower bound in 33.3% of the rows" in out and "warning: feed never varies" in out
    run = tmp_path / "run"
    assert fit(data, run) == 1
    err = capsys.readouterr().err
    assert "td3bc refused on this dataset: valve sits on its lower bound" in err and "--allow-degenerate-actions" in err
    assert not run.exists()
    assert fit(data, run, "--allow-degenerate-actions") == 0
    capsys.readouterr()
    assert fit(data, tmp_path / "iql", algo="iql") == 0
    assert "warning: feed never varies" in capsys.readouterr().err


def test_train_uncertainty_refuses_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgewarden.data import MODELS

    for policy, needle in ((tmp_path / "none.onnx", "not a loadable ONNX model"),
                           (MODELS / "cstr_baseline.onnx", "has no uncertainty output"),
                           (MODELS / "cstr_iql.onnx", "the tanks twin has h1")):
        assert main(["train", "uncertainty", str(policy), "--plant", "tanks", "--episodes", "1"]) != 0
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err, err


def test_an_out_path_that_is_a_file_is_refused_in_one_line(data: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "run.txt"
    blocker.write_text("not a directory")
    assert fit(data, blocker, algo="bc") != 0
    err = capsys.readouterr().err.strip()
    assert "fit --out" in err and "a file is in the way" in err and len(err.splitlines()) == 1, err
    assert blocker.read_text() == "not a directory"
