"""The training CLI end to end with tiny budgets: collect → fit → evaluate → export → the
gateway's policy runtime, resume, and a hand-made D4RL file trained without conversion."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from edgewarden.gateway.app import load_policy
from edgewarden.gateway.cli import main
from edgewarden.gateway.config import load_config
from edgewarden.gateway.policy.onnx_policy import OnnxPolicy
from tests.helpers import EXAMPLE
from edgewarden.training.fit import read_checkpoint


def ew(*args: object) -> int:
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def medium(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "cstr_medium.h5"
    assert ew("train", "collect", "cstr", "--policy", "medium", "--steps", 1500, "--n-envs", 3,
              "--out", path) == 0
    return path


def test_collect_fit_evaluate_export_load(medium: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert ew("train", "fit", "--algo", "td3bc", "--dataset", medium, "--steps", 30, "--out", run,
              "--eval-every", 30, "--eval-episodes", 1, "--log-every", 10, "--set", "hidden=[32,32]",
              "--no-progress") == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "critic_loss" in r] == [10, 20, 30]
    assert "eval_normalized_score" in rows[-1] and (run / "metrics.csv").read_text().startswith("step,wall_s,name,value")
    capsys.readouterr()

    assert ew("train", "evaluate", run, "--episodes", 1, "--json") == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["plant"] == "cstr" and 0.0 <= ev["violation_rate"] <= 1.0 and 0.0 <= ev["shield_rate"] <= 1.0
    assert np.isfinite(ev["normalized_score"])

    out = tmp_path / "policy.onnx"
    assert ew("train", "export", run / "last.pt", "--out", out) == 0
    manifest = json.loads(Path(str(out) + ".json").read_text())
    assert manifest["parity_max_abs_normalized"] <= 1e-5

    # The exported model loads in the gateway against the example plant's configuration.
    s = load_config(EXAMPLE).settings
    s = s.model_copy(update={"policy": s.policy.model_copy(update={"path": out, "sha256": manifest["sha256"]})})
    policy = load_policy(s)
    assert policy.contract.algorithm == "td3bc"
    assert policy.contract.dataset_hash.startswith("sha256:")
    a = policy.infer(np.array([350.0, 0.5, 331.0, 350.0], np.float32))
    assert a.shape == (2,) and np.all((a >= 0) & (a <= 200))

    capsys.readouterr()
    assert ew("train", "evaluate", out, "--episodes", 1, "--json") == 0  # the ONNX file itself
    assert json.loads(capsys.readouterr().out)["normalized_score"] == pytest.approx(ev["normalized_score"], abs=1e-2)


def test_resumed_run_equals_one_run(medium: Path, tmp_path: Path) -> None:
    common = ["--algo", "iql", "--dataset", medium, "--set", "hidden=[16,16]", "--set", "batch_size=32",
              "--log-every", 0, "--checkpoint-every", 5, "--no-progress"]
    assert ew("train", "fit", *common, "--steps", 20, "--out", tmp_path / "a") == 0
    assert ew("train", "fit", *common, "--steps", 10, "--out", tmp_path / "b") == 0
    assert ew("train", "fit", *common, "--steps", 20, "--out", tmp_path / "b", "--resume") == 0
    a = read_checkpoint(tmp_path / "a" / "last.pt")["algo_state"]["modules"]
    b = read_checkpoint(tmp_path / "b" / "last.pt")["algo_state"]["modules"]
    for name in a:
        for k in a[name]:
            assert torch.equal(a[name][k], b[name][k]), f"{name}.{k} differs after resume"


def test_hand_made_d4rl_file_trains_and_exports(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 300
    with h5py.File(tmp_path / "d4rl.h5", "w") as f:  # what other code writes: no edgewarden metadata
        f["observations"] = rng.normal(size=(n, 3))
        f["actions"] = rng.uniform(-1, 1, (n, 2))
        f["rewards"] = rng.normal(size=n)
        f["next_observations"] = rng.normal(size=(n, 3))
        f["terminals"] = np.zeros(n, bool)
        f["timeouts"] = (np.arange(n) % 100 == 99)
    assert ew("train", "fit", "--algo", "bc", "--dataset", tmp_path / "d4rl.h5", "--steps", 10,
              "--out", tmp_path / "run", "--set", "hidden=[8]", "--no-progress") == 0
    assert ew("train", "export", tmp_path / "run", "--out", tmp_path / "p.onnx") == 0
    p = OnnxPolicy.load(tmp_path / "p.onnx", expected_obs=[(f"obs_{i}", "") for i in range(3)],
                        expected_act=[("act_0", "", -1.0, 1.0), ("act_1", "", -1.0, 1.0)])
    assert p.infer(np.zeros(3, np.float32)).shape == (2,)


def test_bad_inputs_are_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["observations"] = np.zeros((3, 2))
    assert ew("train", "fit", "--algo", "bc", "--dataset", tmp_path / "x.h5", "--steps", 1, "--out", tmp_path / "r") != 0
    assert "not in the D4RL layout" in capsys.readouterr().err
    assert ew("train", "export", tmp_path / "missing.pt", "--out", tmp_path / "p.onnx") != 0
    assert "not found" in capsys.readouterr().err
    assert ew("train", "collect", "nosuchplant", "--steps", 10, "--out", tmp_path / "d.h5") != 0
    assert "unknown plant 'nosuchplant'" in capsys.readouterr().err


def _digests(run: Path) -> list[str]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "rank_param_sha256" in r][-1]["rank_param_sha256"]


def test_data_parallel_two_gloo_processes(medium: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    capsys = capfd  # the workers write to the inherited descriptors
    run = tmp_path / "ddp"
    common = ["--algo", "td3bc", "--dataset", medium, "--out", run, "--nproc", 2, "--set", "hidden=[16,16]",
              "--set", "batch_size=32", "--log-every", 5, "--checkpoint-every", 5, "--no-progress"]
    assert ew("train", "fit", *common, "--steps", 10) == 0
    assert "Grad strides do not match bucket view strides" not in capsys.readouterr().err
    first = _digests(run)
    assert len(first) == 2 and first[0] == first[1]  # each rank its own batches, the same parameters
    ck = read_checkpoint(run / "last.pt")
    assert ck["world_size"] == 2 and len(ck["rank_streams"]) == 2
    assert not torch.equal(ck["rank_streams"][0][0], ck["rank_streams"][1][0])  # distinct sample streams

    assert ew("train", "fit", *common, "--steps", 20, "--resume") == 0
    again = _digests(run)
    assert again[0] == again[1] and again != first
    assert read_checkpoint(run / "last.pt")["step"] == 20
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "critic_loss" in r] == [5, 10, 15, 20]  # rank 0 alone wrote

    capsys.readouterr()
    assert ew("train", "fit", "--algo", "td3bc", "--dataset", medium, "--out", run, "--steps", 30, "--resume",
              "--set", "hidden=[16,16]", "--no-progress") != 0
    assert "trained with 2" in capsys.readouterr().err

    out = tmp_path / "ddp.onnx"
    assert ew("train", "export", run, "--out", out) == 0
    sha = json.loads(Path(str(out) + ".json").read_text())["sha256"]
    s = load_config(EXAMPLE).settings
    s = s.model_copy(update={"policy": s.policy.model_copy(update={"path": out, "sha256": sha})})
    assert load_policy(s).infer(np.array([350.0, 0.5, 331.0, 350.0], np.float32)).shape == (2,)


def test_data_parallel_refuses_impossible_setups(medium: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    base = ["train", "fit", "--algo", "bc", "--dataset", medium, "--steps", 1, "--out", tmp_path / "r"]
    n = max(2, have + 1)
    assert ew(*base, "--device", "cuda", "--nproc", n) != 0
    assert f"need {n} GPUs (one per process); this machine has {have}" in capsys.readouterr().err
    if have == 0:
        assert ew(*base, "--device", "cuda") != 0
        assert "sees no CUDA device here" in capsys.readouterr().err
    assert ew(*base, "--device", "cuda:1", "--nproc", 2) != 0
    assert "pass --device cuda" in capsys.readouterr().err
    assert ew(*base, "--nproc", 0) != 0
    assert "--nproc must be >= 1" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_launch_joins_its_group_and_resumes_bit_for_bit(medium: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    def torchrun(out: Path, steps: int, *extra: str) -> None:
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "edgewarden.gateway.cli", "train", "fit", "--algo", "iql", "--dataset", str(medium),
                        "--steps", str(steps), "--out", str(out), "--set", "hidden=[16,16]", "--set",
                        "batch_size=32", "--log-every", "0", "--checkpoint-every", "5", "--no-progress", *extra],
                       check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)

    torchrun(tmp_path / "a", 20)
    torchrun(tmp_path / "b", 10)
    torchrun(tmp_path / "b", 20, "--resume")
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    a = read_checkpoint(tmp_path / "a" / "last.pt")
    b = read_checkpoint(tmp_path / "b" / "last.pt")
    assert a["world_size"] == 2 and a["step"] == b["step"] == 20
    for name, sd in a["algo_state"]["modules"].items():
        for k, v in sd.items():
            assert torch.equal(v, b["algo_state"]["modules"][name][k]), f"{name}.{k} differs after resume"
