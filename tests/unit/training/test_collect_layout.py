"""Collected datasets are in the D4RL layout: consecutive rows are consecutive steps.

Rebuilt from the file alone, as any D4RL reader would: the next observation of a row that
does not end an episode is the observation of the row after it; each episode's return
equals a rollout of its env on its own; format-1 files (rows of the collecting envs
interleaved) are refused with the command that converts them, and the conversion is exact.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgewarden.training import datasets as D
from edgewarden.training.behaviour import make_behaviour
from edgewarden.training.collect import collect, episode_order
from edgewarden.training.dataset_report import inspect_dataset


def _consecutive(ds: D.Dataset) -> None:
    ends = ds.terminals | ds.timeouts
    inner = ~ends[:-1]
    np.testing.assert_array_equal(ds.next_observations[:-1][inner], ds.observations[1:][inner])
    assert ends[-1], "the last row ends an episode"


def test_collected_rows_are_consecutive_steps_and_every_end_is_marked(tmp_path: Path) -> None:
    # 2 envs, 600-step episodes: two whole episodes, then each env's 50 unfinished steps
    collect("cstr", "medium", 1300, tmp_path / "m.h5", seed=3, n_envs=2, progress=False)
    ds = D.load(tmp_path / "m.h5")
    assert len(ds) == 1300 and ds.meta.format_version == D.DATASET_FORMAT_VERSION == 2
    _consecutive(ds)
    np.testing.assert_array_equal(np.flatnonzero(ds.terminals | ds.timeouts), [599, 1199, 1249, 1299])
    # the rows that begin an episode are fresh starts (a reset), not the previous row's next state
    assert not np.array_equal(ds.observations[600], ds.next_observations[599])


def test_a_budget_that_ends_mid_step_keeps_exactly_its_rows(tmp_path: Path) -> None:
    collect("cstr", "random", 1001, tmp_path / "r.h5", seed=0, n_envs=4, progress=False)
    ds = D.load(tmp_path / "r.h5")
    assert len(ds) == 1001
    _consecutive(ds)
    assert int((ds.terminals | ds.timeouts).sum()) == 4  # four envs' cut episodes (the last one shorter)


def test_episode_returns_match_a_rollout_of_each_env_alone(tmp_path: Path) -> None:
    from edgewarden.simulators.gym_env import make_env

    collect("cstr", "expert", 1200, tmp_path / "e.h5", seed=5, n_envs=2, progress=False)
    returns = D.load(tmp_path / "e.h5").episode_returns()
    assert returns.shape == (2,)
    for i in range(2):  # gymnasium seeds a vector env's env i with seed + i
        env = make_env("cstr", randomize_targets=True, terminate_on_hard=False)
        beh = make_behaviour("expert", env, plant="cstr", n_envs=1, seed=0)
        obs, _ = env.reset(seed=5 + i)
        total, done = 0.0, False
        while not done:
            obs, r, term, trunc, _ = env.step(beh(obs[None, :])[0].astype(np.float32))
            total += np.float32(r)
            done = term or trunc
        assert returns[i] == pytest.approx(total, rel=1e-6)


def test_episode_order_puts_finished_episodes_first_then_each_envs_rest() -> None:
    ends = np.zeros((4, 2), bool)  # (step, env)
    ends[1, 1] = True
    ends[2, 0] = True
    # flat index = step * 2 + env. env 1's episode ended first (steps 0-1), then env 0's (0-2);
    # then the unfinished rests by env: env 0's step 3, env 1's steps 2-3
    np.testing.assert_array_equal(episode_order(ends), [1, 3, 0, 2, 4, 6, 5, 7])
    assert episode_order(np.zeros((3, 2), bool)).tolist() == [0, 2, 4, 1, 3, 5]


def _interleaved_v1(path: Path, n_envs: int = 3, steps: int = 40) -> tuple[dict[str, np.ndarray], D.DatasetMeta]:
    """A format-1 file as the old collect wrote it: row k is env k % n_envs. Returns each env's
    rows in order, concatenated env by env, as the conversion must give them back."""
    rng = np.random.default_rng(0)
    per_env = []
    for _ in range(n_envs):
        obs = rng.normal(size=(steps + 1, 2)).astype(np.float32)
        term = np.zeros(steps, bool)
        term[steps // 2] = True
        per_env.append({"observations": obs[:-1], "next_observations": obs[1:], "actions": rng.uniform(0, 1, (steps, 1)),
                        "rewards": rng.normal(size=steps), "terminals": term, "timeouts": np.zeros(steps, bool)})
    inter = {k: np.stack([e[k] for e in per_env], 1).reshape((steps * n_envs,) + per_env[0][k].shape[1:])
             for k in D.KEYS}
    inter["timeouts"][-1] = True
    meta = D.DatasetMeta(plant="cstr", observation_tags=("a", "b"), observation_units=("", ""), action_tags=("u",),
                         action_units=("",), action_low=(0.0,), action_high=(1.0,), extra={"n_envs": n_envs})
    D.write(path, inter, meta)
    import h5py

    with h5py.File(path, "a") as f:  # the version is not in the content hash: this is a valid format-1 file
        f.attrs["edgewarden_format_version"] = 1
    want = {k: np.concatenate([e[k] for e in per_env]) for k in D.KEYS}
    want["timeouts"][np.arange(1, n_envs + 1) * steps - 1] = True
    return want, meta


def test_format1_interleaved_file_is_refused_with_the_command_that_converts_it(tmp_path: Path) -> None:
    old = tmp_path / "old.h5"
    want, _ = _interleaved_v1(old)
    with pytest.raises(D.DatasetError, match=r"interleaves the rows of 3 envs.*edgewarden train upgrade"):
        D.load(old)
    cli = [sys.executable, "-m", "edgewarden.gateway.cli", "train", "upgrade", str(old), str(tmp_path / "new.h5")]
    p = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    ds = D.load(tmp_path / "new.h5")
    for k in D.KEYS:
        np.testing.assert_array_equal(getattr(ds, k), want[k].astype(getattr(ds, k).dtype), err_msg=k)
    _consecutive(ds)
    assert ds.meta.extra["upgraded_from"]["format_version"] == 1
    again = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert again.returncode != 0 and "never overwrites" in again.stderr and "Traceback" not in again.stderr


def test_format1_file_of_one_env_reads_as_it_is(tmp_path: Path) -> None:
    # from-audit wrote format 1 from one trajectory: its rows were in order already
    old = tmp_path / "one.h5"
    _interleaved_v1(old, n_envs=1)
    assert len(D.load(old)) == 40


def test_report_gives_each_observation_against_the_twins_hard_limits(tmp_path: Path) -> None:
    from edgewarden.simulators.gym_env import make_env

    env = make_env("cstr")
    n = 200
    obs = np.tile(np.asarray([350.0, 0.5, 340.0, 350.0], np.float32), (n, 1))
    obs[:30, 0] = 405.0  # T above its hard limit (400 K) in 15 % of the rows
    data = {"observations": obs, "next_observations": obs, "actions": np.full((n, 2), 100.0, np.float32),
            "rewards": np.zeros(n, np.float32), "terminals": np.zeros(n, bool), "timeouts": np.eye(1, n, n - 1, bool)[0]}
    meta = D.DatasetMeta(plant="cstr", observation_tags=env.observation_names, observation_units=env.observation_units,
                         action_tags=env.action_names, action_units=env.action_units, action_low=(0.0, 0.0),
                         action_high=(200.0, 200.0))
    D.write(tmp_path / "c.h5", data, meta)
    r = inspect_dataset(D.load(tmp_path / "c.h5"))
    assert r.violation_rate == pytest.approx(0.15)
    t = r.observations[0]
    assert (t.tag, t.hard_high, t.outside) == ("T", 400.0, pytest.approx(0.15))
    assert "hard limits [290, 400], outside 15.00%" in "\n".join(r.lines())


def test_a_collected_dataset_reads_back_the_same_through_minari(tmp_path: Path) -> None:
    pytest.importorskip("minari")  # the 'minari' extra (in 'dev': CI has it)
    collect("cstr", "medium", 1300, tmp_path / "m.h5", seed=3, n_envs=2, progress=False)
    cli = [sys.executable, "-m", "edgewarden.gateway.cli", "train", "to-minari", str(tmp_path / "m.h5"),
           "--id", "edgewarden/cstr-medium-v0", "--root", str(tmp_path / "minari")]
    p = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    os.environ["MINARI_DATASETS_PATH"] = str(tmp_path / "minari")
    try:
        import minari

        m = minari.load_dataset("edgewarden/cstr-medium-v0")
        eps = list(m.iterate_episodes())
    finally:
        del os.environ["MINARI_DATASETS_PATH"]
    ds = D.load(tmp_path / "m.h5")
    # rebuilt from Minari's episodes as its users do: the same transitions, row for row
    np.testing.assert_array_equal(np.concatenate([e.observations[:-1] for e in eps]), ds.observations)
    np.testing.assert_array_equal(np.concatenate([e.observations[1:] for e in eps]), ds.next_observations)
    np.testing.assert_array_equal(np.concatenate([e.actions for e in eps]), ds.actions)
    np.testing.assert_allclose([e.rewards.sum() for e in eps], ds.episode_returns(), rtol=1e-6)
    assert [bool(e.truncations[-1]) for e in eps] == [True] * 4 and m.total_steps == 1300


def _echo_dataset(path: Path) -> Path:
    """T and the coolant's readback (the last action) as observations."""
    rng = np.random.default_rng(0)
    n = 300
    coolant = np.clip(150.0 + np.cumsum(rng.normal(0.0, 2.0, n)), 0.0, 200.0)
    temperature = 350.0 + rng.normal(0.0, 1.0, n + 1)
    readback = np.concatenate([[coolant[0]], coolant])  # what the PLC applied: the last action
    obs = np.stack([temperature, readback], axis=1).astype(np.float32)
    data = {"observations": obs[:-1], "next_observations": obs[1:],
            "actions": np.stack([coolant, np.full(n, 100.0)], axis=1).astype(np.float32),
            "rewards": np.zeros(n, np.float32), "terminals": np.zeros(n, bool),
            "timeouts": np.eye(1, n, n - 1, bool)[0]}
    meta = D.DatasetMeta(plant="line7", observation_tags=("T", "coolant_flow"), observation_units=("K", "L/min"),
                         action_tags=("coolant_flow_sp", "feed_flow_sp"), action_units=("L/min", "L/min"),
                         action_low=(0.0, 0.0), action_high=(200.0, 200.0))
    D.write(path, data, meta)
    return path


def test_an_observation_that_echoes_an_action_is_warned_about_and_a_measurement_is_not(tmp_path: Path) -> None:
    """A readback of the gateway's own output among the observations lets a policy learn to
    copy its last action; the report names it, for every algorithm (fit prints it)."""
    r = inspect_dataset(D.load(_echo_dataset(tmp_path / "e.h5")))
    assert [o.echoes for o in r.observations] == [None, "coolant_flow_sp"]
    assert any("observation coolant_flow echoes action coolant_flow_sp" in p for p in r.problems())
    assert r.action_problems() == ["feed_flow_sp never varies (std 0 L/min)"]  # what a critic refuses on


def test_the_offline_report_names_a_policy_that_copies_its_readback(tmp_path: Path) -> None:
    """train report makes the promotion's copying check on the dataset's states."""
    from edgewarden.gateway.policy.contract import PolicyContract
    from edgewarden.training.offline_report import report
    from edgewarden.training.onnx_graph import build_linear_policy, write_model

    data = _echo_dataset(tmp_path / "e.h5")
    c = PolicyContract(observation_tags=("T", "coolant_flow"), observation_units=("K", "L/min"),
                       action_tags=("coolant_flow_sp", "feed_flow_sp"), action_units=("L/min", "L/min"),
                       action_low=(0.0, 0.0), action_high=(200.0, 200.0), algorithm="bc", dataset_hash="none",
                       training_config={}, input_name="obs", output_name="action")
    copy = write_model(tmp_path / "copy.onnx", build_linear_policy(c, np.array([[0.0, 1.0], [0.0, 0.0]]),
                                                                   np.array([0.0, 100.0])))
    measured = write_model(tmp_path / "measured.onnx", build_linear_policy(c, np.array([[20.0, 0.0], [0.0, 0.0]]),
                                                                           np.array([-6850.0, 100.0])))
    copied = report(copy, data)
    assert copied.copying and "coolant_flow_sp copies its own output" in copied.copying[0]
    assert any(line.startswith("  copying    coolant_flow_sp copies") for line in copied.lines())
    assert report(measured, data).copying == []


def _loop_dataset(path: Path, excitation: float) -> Path:
    """A P loop on a first-order process: coolant = 100 + 10·(T − T_sp), plus a binary
    excitation of ``excitation`` L/min held 15 rows."""
    rng = np.random.default_rng(1)
    n, t, rows, acts = 2000, 352.0, [], []
    for k in range(n):
        sp = 350.0 if (k // 400) % 2 == 0 else 352.0
        if k % 15 == 0:
            excite = excitation * rng.choice([-1.0, 1.0])
        u = 100.0 + 10.0 * (t - sp) + excite
        rows.append([t, sp])
        acts.append([u])
        t += (-(t - 355.0) - 0.05 * (u - 100.0)) / 20.0 + rng.normal(0.0, 0.02)
    obs = np.array(rows + [[t, sp]], np.float32)
    data = {"observations": obs[:-1], "next_observations": obs[1:], "actions": np.array(acts, np.float32),
            "rewards": np.zeros(n, np.float32), "terminals": np.zeros(n, bool), "timeouts": np.eye(1, n, n - 1, bool)[0]}
    D.write(path, data, D.DatasetMeta(plant="line7", observation_tags=("T", "T_sp"), observation_units=("K", "K"),
                                      action_tags=("coolant_flow_sp",), action_units=("L/min",),
                                      action_low=(0.0,), action_high=(200.0,)))
    return path


def test_a_controllers_own_history_is_flagged_as_uninformative_and_excited_history_is_not(tmp_path: Path) -> None:
    """The action a P loop writes is a function of what it sees: nothing independent to
    learn from. A ±20 L/min excitation (10 % of the span) puts most of it back (T answers
    part of it, so T explains part of it)."""
    plain = inspect_dataset(D.load(_loop_dataset(tmp_path / "plain.h5", 0.0)))
    assert plain.actions[0].independent < 0.01
    assert any("coolant_flow_sp varies independently of the observations by" in p and "excite start" in p
               for p in plain.problems())
    assert plain.action_problems() == []  # a warning, not a refusal: BC and IQL still learn the loop
    excited = inspect_dataset(D.load(_loop_dataset(tmp_path / "excited.h5", 20.0)))
    assert 0.05 < excited.actions[0].independent <= 0.1
    assert excited.problems() == []
    assert f"independent of the observations {excited.actions[0].independent:.2%}" in "\n".join(excited.lines())
