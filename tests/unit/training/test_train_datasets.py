"""HDF5 datasets: round trip, refusals with reasons, chunked reads, foreign D4RL files."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from edgewarden.training import datasets as D


def _arrays(n: int = 100, n_obs: int = 3, n_act: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n + 1, n_obs)).astype(np.float32)
    timeouts = np.zeros(n, bool)
    timeouts[49::50] = True
    return {"observations": obs[:-1], "actions": rng.uniform(0, 10, (n, n_act)).astype(np.float32),
            "rewards": rng.normal(size=n).astype(np.float32), "next_observations": obs[1:],
            "terminals": np.zeros(n, bool), "timeouts": timeouts}


def _meta(n_obs: int = 3, n_act: int = 2) -> D.DatasetMeta:
    return D.DatasetMeta(plant="cstr", observation_tags=tuple(f"o{i}" for i in range(n_obs)),
                         observation_units=("K",) * n_obs, action_tags=tuple(f"a{i}" for i in range(n_act)),
                         action_units=("L/min",) * n_act, action_low=(0.0,) * n_act, action_high=(10.0,) * n_act,
                         behaviour_policy="medium", seed=3)


def test_round_trip_keeps_arrays_metadata_and_hash(tmp_path: Path) -> None:
    a = _arrays()
    meta = D.write(tmp_path / "d.h5", a, _meta())
    ds = D.load(tmp_path / "d.h5")
    for k in D.KEYS:
        np.testing.assert_array_equal(getattr(ds, k), a[k])
    assert ds.meta.content_hash == meta.content_hash == D.content_hash(a)
    assert ds.meta.behaviour_policy == "medium" and ds.meta.seed == 3 and ds.meta.n == 100
    assert ds.meta.format_version == D.DATASET_FORMAT_VERSION
    assert ds.episode_returns().shape == (2,)


def test_chunked_reads_see_every_row_once(tmp_path: Path) -> None:
    a = _arrays(n=1000)
    D.write(tmp_path / "d.h5", a, _meta())
    chunks = list(D.iter_chunks(tmp_path / "d.h5", chunk_rows=64))
    assert len(chunks) == 16
    np.testing.assert_array_equal(np.concatenate([c["actions"] for c in chunks]), a["actions"])


def test_unknown_version_is_refused_with_a_reason(tmp_path: Path) -> None:
    D.write(tmp_path / "d.h5", _arrays(), _meta())
    with h5py.File(tmp_path / "d.h5", "a") as f:
        f.attrs["edgewarden_format_version"] = 99
    with pytest.raises(D.DatasetError, match="format version 99 is not supported"):
        D.load(tmp_path / "d.h5")


@pytest.mark.parametrize(("key", "row", "match"), [
    ("observations", 7, "observations has a non-finite value at row 7"),
    ("rewards", 3, "rewards has a non-finite value at row 3"),
])
def test_nan_is_refused_naming_array_and_row(tmp_path: Path, key: str, row: int, match: str) -> None:
    a = _arrays()
    a[key][row] = np.nan
    with pytest.raises(D.DatasetError, match=match):
        D.write(tmp_path / "d.h5", a, _meta())


def test_modified_file_and_out_of_bounds_actions_are_refused(tmp_path: Path) -> None:
    D.write(tmp_path / "d.h5", _arrays(), _meta())
    with h5py.File(tmp_path / "d.h5", "a") as f:
        f["actions"][5, 1] = 99.0
    with pytest.raises(D.DatasetError, match="content hash mismatch"):
        D.load(tmp_path / "d.h5")
    with pytest.raises(D.DatasetError, match=r"action 'a1' at row 5 is 99, outside its bounds \[0, 10\]"):
        D.load(tmp_path / "d.h5", verify_hash=False)


def test_wrong_layout_and_missing_file_are_refused(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["observations"] = np.zeros((3, 2))
    with pytest.raises(D.DatasetError, match=r"missing \['actions', 'rewards', 'terminals'\]"):
        D.load(tmp_path / "x.h5")
    with pytest.raises(D.DatasetError, match="file not found"):
        D.load(tmp_path / "nope.h5")


def test_foreign_d4rl_file_without_optional_arrays_is_read(tmp_path: Path) -> None:
    """A plain D4RL file from other code: no metadata, 1-D actions, no next_observations/timeouts."""
    rng = np.random.default_rng(1)
    n = 30
    terminals = np.zeros(n, bool)
    terminals[9] = True
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["observations"] = rng.normal(size=(n, 2))  # float64, as D4RL often is
        f["actions"] = rng.uniform(-2, 3, n)
        f["rewards"] = rng.normal(size=n)
        f["terminals"] = terminals.astype(np.uint8)
    ds = D.load(tmp_path / "foreign.h5")
    assert ds.meta.format_version is None and ds.meta.observation_tags == ("obs_0", "obs_1")
    assert ds.actions.shape == (n, 1) and ds.timeouts.sum() == 0
    np.testing.assert_array_equal(ds.next_observations[3], ds.observations[4])
    np.testing.assert_array_equal(ds.next_observations[9], ds.observations[9])  # terminal: unused
    assert ds.meta.action_low[0] == pytest.approx(ds.actions.min()) and ds.meta.content_hash.startswith("sha256:")
