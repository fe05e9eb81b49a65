"""Offline datasets in HDF5 with the D4RL layout, plus edgewarden metadata.

Layout (one transition per row, N rows)::

    observations       float32 (N, n_obs)   engineering units, contract order
    actions            float32 (N, n_act)   engineering units
    rewards            float32 (N,)
    next_observations  float32 (N, n_obs)
    terminals          bool    (N,)         the episode ended for a reason of the plant
    timeouts           bool    (N,)         the episode was cut by a time limit

Consecutive rows are consecutive steps: each episode's rows are contiguous and in time
order, and its last row is a terminal or a timeout (format 2). Format 1 files from
``collect`` interleaved its vector envs row by row (``extra["n_envs"]`` > 1); they are
refused with the command that converts them (:func:`upgrade`, ``edgewarden train upgrade``),
which reorders the rows exactly. Format 1 files of one env (``from-audit``) read as they are.

Our files add root attributes: ``edgewarden_format_version`` (refused if unknown),
``plant``, ``observation_tags``/``observation_units``/``action_tags``/``action_units``/
``action_low``/``action_high`` (JSON lists), ``behaviour_policy``, ``seed`` and
``content_hash`` ("sha256:" over the six arrays, in the order above, as little-endian
bytes). A file *without* ``edgewarden_format_version`` is read as a plain D4RL file
(from D4RL, Minari exports or any other code): tags become ``obs_0..`` / ``act_0..``,
units empty, action bounds the data's own min/max; ``next_observations`` may be missing
(rebuilt from the next row within an episode), as may ``timeouts``.

Everything is read in chunks of ``CHUNK_ROWS`` rows: validating, hashing and computing
statistics never hold more than one chunk of a large file; :func:`load` copies into
preallocated arrays chunk by chunk.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from pydantic import BaseModel, ConfigDict, StrictFloat, StrictStr, field_validator

from edgewarden.gateway.errors import GatewayError
from edgewarden.gateway.readfile import check_regular

__all__ = [
    "CHUNK_ROWS",
    "DATASET_FORMAT_VERSION",
    "Dataset",
    "DatasetError",
    "DatasetMeta",
    "iter_chunks",
    "load",
    "read_meta",
    "upgrade",
    "write",
]

DATASET_FORMAT_VERSION = 2
_SUPPORTED = frozenset({1, 2})
CHUNK_ROWS = 65536
KEYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")
_DTYPES = {"observations": np.float32, "actions": np.float32, "rewards": np.float32,
           "next_observations": np.float32, "terminals": np.bool_, "timeouts": np.bool_}


class DatasetError(GatewayError):
    """A dataset file that cannot be used, with the file and the reason."""


class DatasetMeta(BaseModel):
    """What a dataset says about itself; for foreign D4RL files, what could be inferred."""

    # an infinite action bound is an unknown one (a foreign file read without its statistics)
    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")

    plant: str
    observation_tags: tuple[StrictStr, ...]
    observation_units: tuple[StrictStr, ...]
    action_tags: tuple[StrictStr, ...]
    action_units: tuple[StrictStr, ...]
    action_low: tuple[StrictFloat, ...]
    action_high: tuple[StrictFloat, ...]
    behaviour_policy: str = "unknown"
    seed: int | None = None
    content_hash: str = ""
    n: int = 0
    format_version: int | None = DATASET_FORMAT_VERSION  # None: a foreign D4RL file
    extra: dict[str, Any] = {}  # free-form provenance, stored as its own JSON attribute

    @field_validator("action_low", "action_high")
    @classmethod
    def _not_nan(cls, bounds: tuple[float, ...]) -> tuple[float, ...]:
        if any(b != b for b in bounds):
            raise ValueError("an action bound is NaN")
        return bounds

    @property
    def n_obs(self) -> int:
        return len(self.observation_tags)

    @property
    def n_act(self) -> int:
        return len(self.action_tags)

    def to_dict(self) -> dict[str, Any]:
        """Everything but ``extra``, as plain JSON types (the checkpoint's copy)."""
        return self.model_dump(mode="json", exclude={"extra"})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DatasetMeta:
        return cls.model_validate(d)


@dataclass
class Dataset:
    """A dataset in memory: the six arrays and its metadata."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    meta: DatasetMeta

    def __len__(self) -> int:
        return int(self.observations.shape[0])

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in KEYS}

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of each complete episode (ends at a terminal or timeout)."""
        ends = np.flatnonzero(self.terminals | self.timeouts)
        if ends.size == 0:
            return np.zeros(0)
        csum = np.concatenate([[0.0], np.cumsum(self.rewards, dtype=np.float64)])
        starts = np.concatenate([[0], ends[:-1] + 1])
        return csum[ends + 1] - csum[starts]


def _fail(path: os.PathLike[str] | str, reason: str) -> DatasetError:
    return DatasetError(f"dataset {str(path)!r} refused: {reason}")


def _json_list(attrs: h5py.AttributeManager, key: str) -> list[Any]:
    v = attrs[key]
    return list(json.loads(v if isinstance(v, str) else bytes(v).decode()))


def content_hash(arrays: dict[str, np.ndarray] | None = None, *, chunks: Iterator[dict[str, np.ndarray]] | None = None) -> str:
    """``sha256:`` over the six arrays key by key (canonical dtypes, little-endian)."""
    if arrays is not None:
        chunks = iter([arrays])
    assert chunks is not None
    hs = {k: hashlib.sha256() for k in KEYS}
    for c in chunks:
        for k in KEYS:
            hs[k].update(np.ascontiguousarray(c[k], dtype=np.dtype(_DTYPES[k]).newbyteorder("<")).tobytes())
    top = hashlib.sha256()
    for k in KEYS:
        top.update(k.encode() + b"\0" + hs[k].digest())
    return "sha256:" + top.hexdigest()


def write(path: str | os.PathLike[str], data: dict[str, np.ndarray], meta: DatasetMeta) -> DatasetMeta:
    """Write a dataset (atomically: temp file + rename). Returns the metadata as written."""
    path = Path(path)
    arrays = {k: np.asarray(data[k], dtype=_DTYPES[k]) for k in KEYS}
    n = arrays["observations"].shape[0]
    _check_arrays(path, arrays, meta.n_obs, meta.n_act)
    meta = meta.model_copy(update={"n": n, "content_hash": content_hash(arrays),
                                   "format_version": DATASET_FORMAT_VERSION})
    tmp = path.with_name(f".{path.name}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(tmp, "w") as f:
        for k in KEYS:
            a = arrays[k]
            chunk = (min(max(n, 1), 16384),) + a.shape[1:]
            f.create_dataset(k, data=a, chunks=chunk if n else None)
        a = f.attrs
        a["edgewarden_format_version"] = DATASET_FORMAT_VERSION
        a["plant"] = meta.plant
        for k in ("observation_tags", "observation_units", "action_tags", "action_units",
                  "action_low", "action_high"):
            a[k] = json.dumps(list(getattr(meta, k)))
        a["behaviour_policy"] = meta.behaviour_policy
        a["seed"] = -1 if meta.seed is None else int(meta.seed)
        a["content_hash"] = meta.content_hash
        a["extra"] = json.dumps(meta.extra, sort_keys=True)
    os.replace(tmp, path)
    return meta


def read_meta(path: str | os.PathLike[str], *, interleaved_ok: bool = False) -> DatasetMeta:
    """Open, check the layout and version, and return the metadata (no data read)."""
    path = Path(path)
    try:
        check_regular(path, what="file", error=DatasetError)
    except DatasetError as e:
        raise _fail(path, str(e).split(": ", 1)[-1]) from None
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise _fail(path, f"not a readable HDF5 file ({e})") from None
    with f:
        return _meta(path, f, stats_pass=True, interleaved_ok=interleaved_ok)


def interleaved_envs(meta: DatasetMeta) -> int:
    """How many envs a format-1 collection interleaved row by row (1: the rows are in order)."""
    if meta.format_version != 1:
        return 1
    try:
        return max(1, int(meta.extra.get("n_envs", 1) or 1))
    except (TypeError, ValueError):
        return 1


def _meta(path: Path, f: h5py.File, *, stats_pass: bool, interleaved_ok: bool = False) -> DatasetMeta:
    missing = [k for k in ("observations", "actions", "rewards", "terminals") if k not in f]
    if missing:
        raise _fail(path, f"not in the D4RL layout: missing {missing} (needs observations, actions, "
                          "rewards, terminals; next_observations and timeouts are optional)")
    attrs = f.attrs
    n, n_obs = _shape2(path, f, "observations")
    n_a, n_act = _shape2(path, f, "actions")
    if n_a != n:
        raise _fail(path, f"actions has {n_a} rows, observations {n}")
    for k in ("rewards", "terminals", "timeouts", "next_observations"):
        if k in f and f[k].shape[0] != n:
            raise _fail(path, f"{k} has {f[k].shape[0]} rows, observations {n}")
    if "edgewarden_format_version" in attrs:
        fv = int(attrs["edgewarden_format_version"])
        if fv not in _SUPPORTED:
            raise _fail(path, f"edgewarden dataset format version {fv} is not supported by this "
                              f"version (supported: {sorted(_SUPPORTED)}); upgrade edgewarden or "
                              "re-collect the dataset")
        try:
            seed = int(attrs["seed"])
            meta = DatasetMeta(
                plant=str(attrs["plant"]),
                observation_tags=tuple(_json_list(attrs, "observation_tags")),
                observation_units=tuple(_json_list(attrs, "observation_units")),
                action_tags=tuple(_json_list(attrs, "action_tags")),
                action_units=tuple(_json_list(attrs, "action_units")),
                action_low=tuple(float(v) for v in _json_list(attrs, "action_low")),
                action_high=tuple(float(v) for v in _json_list(attrs, "action_high")),
                behaviour_policy=str(attrs["behaviour_policy"]),
                seed=None if seed < 0 else seed,
                content_hash=str(attrs["content_hash"]),
                n=n, format_version=fv,
                extra=json.loads(str(attrs.get("extra", "{}"))),
            )
        except (KeyError, ValueError, TypeError) as e:
            raise _fail(path, f"metadata attribute missing or malformed ({e})") from None
        if meta.n_obs != n_obs or meta.n_act != n_act:
            raise _fail(path, f"metadata names {meta.n_obs} observations and {meta.n_act} actions, "
                              f"the arrays have {n_obs} and {n_act}")
        k = interleaved_envs(meta)
        if k > 1 and not interleaved_ok:
            raise _fail(path, f"format 1 interleaves the rows of {k} envs, so consecutive rows are not "
                              "consecutive steps (D4RL readers would rebuild wrong transitions and episodes); "
                              f"convert it with `edgewarden train upgrade {path} NEW.h5` (exact), or collect it again")
        return meta
    # A foreign D4RL file: infer what we can, in one chunked pass.
    lo = np.full(n_act, np.inf)
    hi = np.full(n_act, -np.inf)
    if stats_pass:
        for s in range(0, n, CHUNK_ROWS):
            a = np.asarray(f["actions"][s:s + CHUNK_ROWS], dtype=np.float64)
            lo = np.minimum(lo, a.min(axis=0))
            hi = np.maximum(hi, a.max(axis=0))
        same = lo >= hi
        lo[same] -= 1.0
        hi[same] += 1.0
    return DatasetMeta(
        plant=str(attrs.get("plant", "unknown")),
        observation_tags=tuple(f"obs_{i}" for i in range(n_obs)),
        observation_units=("",) * n_obs,
        action_tags=tuple(f"act_{i}" for i in range(n_act)),
        action_units=("",) * n_act,
        action_low=tuple(float(v) for v in lo), action_high=tuple(float(v) for v in hi),
        behaviour_policy="unknown (foreign D4RL file)", seed=None, content_hash="", n=n,
        format_version=None,
    )


def _shape2(path: Path, f: h5py.File, key: str) -> tuple[int, int]:
    shape = f[key].shape
    if len(shape) == 1:
        return shape[0], 1
    if len(shape) != 2:
        raise _fail(path, f"{key} must be 2-D (N, dim), has shape {shape}")
    return shape[0], shape[1]


def iter_chunks(path: str | os.PathLike[str], chunk_rows: int = CHUNK_ROWS, *,
                interleaved_ok: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """Yield the file's transitions in chunks of at most ``chunk_rows`` rows, validated.

    Missing ``timeouts`` read as all-False; missing ``next_observations`` are rebuilt from
    the following row (the last row of each episode then repeats its own observation,
    which only matters at a timeout: at a terminal the next state is not used).
    """
    path = Path(path)
    with h5py.File(path, "r") as f:
        meta = _meta(path, f, stats_pass=False, interleaved_ok=interleaved_ok)
        n = meta.n
        for s in range(0, n, chunk_rows):
            e = min(n, s + chunk_rows)
            c: dict[str, np.ndarray] = {}
            for k in ("observations", "actions"):
                c[k] = np.asarray(f[k][s:e], dtype=np.float32).reshape(e - s, -1)
            c["rewards"] = np.asarray(f["rewards"][s:e], dtype=np.float32).reshape(-1)
            c["terminals"] = np.asarray(f["terminals"][s:e]).reshape(-1).astype(bool)
            c["timeouts"] = (np.asarray(f["timeouts"][s:e]).reshape(-1).astype(bool)
                             if "timeouts" in f else np.zeros(e - s, bool))
            if "next_observations" in f:
                c["next_observations"] = np.asarray(f["next_observations"][s:e], dtype=np.float32).reshape(e - s, -1)
            else:
                nxt = np.asarray(f["observations"][s + 1:min(n, e + 1)], dtype=np.float32).reshape(-1, meta.n_obs)
                if nxt.shape[0] < e - s:
                    nxt = np.concatenate([nxt, c["observations"][-1:]])
                ends = c["terminals"] | c["timeouts"]
                nxt[ends] = c["observations"][ends]
                c["next_observations"] = nxt
            _check_arrays(path, c, meta.n_obs, meta.n_act, row0=s)
            yield c


def _check_arrays(path: Path, c: dict[str, np.ndarray], n_obs: int, n_act: int, row0: int = 0) -> None:
    n = c["observations"].shape[0]
    for k in KEYS:
        want = (n, n_obs) if k in ("observations", "next_observations") else (n, n_act) if k == "actions" else (n,)
        if c[k].shape != want:
            raise _fail(path, f"{k} has shape {c[k].shape}, expected {want}")
        if c[k].dtype.kind == "f":
            bad = ~np.isfinite(c[k])
            if bad.any():
                row = row0 + int(np.argwhere(bad)[0][0])
                raise _fail(path, f"{k} has a non-finite value at row {row}")


def load(path: str | os.PathLike[str], *, check_bounds: bool = True, verify_hash: bool = True,
         interleaved_ok: bool = False) -> Dataset:
    """Read a whole dataset into memory, chunk by chunk, validating as it goes.

    Our own files are checked against their content hash and action bounds; a foreign
    D4RL file gets the inferred metadata (see the module docstring) and its hash computed.
    """
    path = Path(path)
    meta = read_meta(path, interleaved_ok=interleaved_ok)
    out = {k: np.empty((meta.n, meta.n_obs) if k in ("observations", "next_observations")
                       else (meta.n, meta.n_act) if k == "actions" else (meta.n,), dtype=_DTYPES[k])
           for k in KEYS}
    s = 0
    for c in iter_chunks(path, interleaved_ok=interleaved_ok):
        e = s + c["observations"].shape[0]
        for k in KEYS:
            out[k][s:e] = c[k]
        s = e
    digest = content_hash(out)
    if meta.format_version is not None and verify_hash and meta.content_hash and digest != meta.content_hash:
        raise _fail(path, f"content hash mismatch: metadata says {meta.content_hash}, data has {digest} "
                          "(the file was modified after it was written)")
    meta = meta.model_copy(update={"content_hash": digest})
    if check_bounds and meta.n:
        lo = np.asarray(meta.action_low, np.float32)
        hi = np.asarray(meta.action_high, np.float32)
        tol = 1e-4 * np.maximum(1.0, hi - lo)
        bad = (out["actions"] < lo - tol) | (out["actions"] > hi + tol)
        if bad.any():
            r, j = (int(v) for v in np.argwhere(bad)[0])
            raise _fail(path, f"action {meta.action_tags[j]!r} at row {r} is {out['actions'][r, j]:g}, "
                              f"outside its bounds [{lo[j]:g}, {hi[j]:g}]")
    return Dataset(**out, meta=meta)


def upgrade(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> DatasetMeta:
    """Rewrite a format-1 file in the current format: an interleaved collection's rows are put
    back in each env's order (row ``k`` was env ``k % n_envs``: collect wrote one row per env
    and step), each env's last row ends its episode. The source's hash is checked first."""
    src = Path(src)
    meta = read_meta(src, interleaved_ok=True)
    if meta.format_version != 1:
        raise _fail(src, f"nothing to upgrade: it is format {meta.format_version}, not 1")
    d = load(src, interleaved_ok=True)
    k = interleaved_envs(meta)
    rows = np.concatenate([np.arange(i, len(d), k) for i in range(k)])
    out = {key: v[rows] for key, v in d.arrays().items()}
    tails = np.cumsum([len(range(i, len(d), k)) for i in range(k)]) - 1
    out["timeouts"][tails] |= ~out["terminals"][tails]
    extra = {**meta.extra, "upgraded_from": {"format_version": 1, "content_hash": meta.content_hash}}
    return write(dst, out, meta.model_copy(update={"extra": extra}))


def concat(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in KEYS}
