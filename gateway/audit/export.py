"""Reading the log out: filtered JSON lines, the HDF5 training dataset, the export marker.

**Exported** (what retention relies on): a record is exported once ``edgewarden audit
export --format jsonl -o FILE`` has written it, unfiltered, to ``FILE`` and fsynced that
file; the command then records ``through_seq`` (the last record written) in
``exported.json`` in the log directory (temp file, fsync, rename, directory fsync; the
value only ever grows). The writer's retention deletes a segment only when all its
records are at or below ``through_seq``. Filtered exports, stdout and HDF5 exports do not
move the marker: they are not a copy of the log.

No export overwrites a file: it may hold the only copy of records retention has since
deleted. An unfiltered JSON-lines export to a file that already holds an export of this
log *continues* it (:func:`continuation`): it appends the records after the file's last
one, provided the log still holds that record (same hash) or starts right after it
(chained to it); anything else is refused.

The HDF5 export builds the D4RL layout of ``training.datasets`` from consecutive
``cycle`` records in AUTO: row i is (obs of cycle n, action written in cycle n, obs of
cycle n+1). A run ends where the next cycle is missing, not AUTO, wrote nothing or has
a missing observation: that row gets ``timeouts = True``. The gateway does not record a
reward, so ``rewards`` are zeros (``extra.rewards = "not recorded"``): relabel them with
the plant's reward before training.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from gateway.audit import record as fmt
from gateway.audit.verify import DecodedRecord, iter_records
from gateway.audit.writer import EXPORTED_NAME, _fsync_dir, read_exported_marker
from gateway.errors import AuditError

HDF5_EXPORT_VERSION = 1  # the "audit_export_version" in the dataset's extra metadata


def parse_time(text: str) -> float:
    """Unix seconds from a number or an ISO-8601 time (UTC when no zone is given)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        t = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise AuditError(f"cannot read time {text!r}: give Unix seconds or ISO-8601 like "
                         "2026-11-23T10:00:00Z") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.UTC)
    return t.timestamp()


def select(records: Iterable[DecodedRecord], *, since: float | None = None, until: float | None = None,
           kinds: Iterable[str] | None = None) -> Iterator[DecodedRecord]:
    """Records with ``since <= t_wall < until`` and a kind in ``kinds`` (None: all)."""
    wanted = set(kinds) if kinds else None
    for rec in records:
        p = rec.payload
        if wanted is not None and p.get("kind") not in wanted:
            continue
        t = p.get("t_wall")
        if (since is not None or until is not None) and not isinstance(t, (int, float)):
            continue
        if since is not None and t < since:
            continue
        if until is not None and t >= until:
            continue
        yield rec


def record_line(rec: DecodedRecord) -> str:
    return json.dumps({"seq": rec.seq, "hash": rec.hash, "payload": rec.payload}, ensure_ascii=False) + "\n"


def unacknowledged(payload: dict[str, Any]) -> list[str]:
    """The write outcomes of a cycle or trip record that are not acknowledgements
    (``failed: …``, ``timeout``, ``not_attempted: …``); empty when everything sent was."""
    acks: list[Any] = []
    for field in ("ack", "prev_ack"):
        if isinstance(payload.get(field), list):
            acks += payload[field]
    safe = payload.get("safe_write")
    if isinstance(safe, dict) and isinstance(safe.get("ack"), list):
        acks += safe["ack"]
    return [a for a in acks if a != "ok"]


def write_jsonl(records: Iterable[DecodedRecord], out: TextIO) -> tuple[int, DecodedRecord | None]:
    n, last = 0, None
    for rec in records:
        out.write(record_line(rec))
        n, last = n + 1, rec
    return n, last


def continuation(path: Path, directory: Path) -> DecodedRecord | None:
    """The last record of an earlier export in ``path``, checked to be continuable from
    the log in ``directory``; None when ``path`` does not exist or is empty. Raises
    ``AuditError`` (nothing written) when appending to ``path`` could lose or misplace
    records: a file that is not an export of this log, an interrupted export, or a gap."""
    path = Path(path)
    try:
        line, partial = fmt.tail_lines(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AuditError(f"cannot read {path}: {exc}") from None
    if partial:
        raise AuditError(f"{path} ends in an incomplete line (an export that was interrupted?): "
                         "remove that line or export to a new file; nothing was written")
    if line is None:
        return None
    try:
        last = json.loads(line)
        prev = DecodedRecord(int(last["seq"]), str(last["hash"]), last["payload"])
    except (ValueError, KeyError, TypeError):
        raise AuditError(f"{path} exists and is not a JSON-lines export of an audit log: an export never "
                         "overwrites a file; choose a new file") from None
    for rec in iter_records(directory):
        if rec.seq == prev.seq and rec.hash == prev.hash:
            return prev
        if rec.seq == prev.seq + 1 and rec.prev_hash == prev.hash:
            return prev
        if rec.seq >= prev.seq:
            break
    raise AuditError(f"{path} ends at seq {prev.seq}, which this log does not continue (another log's "
                     f"export, or the records after it were deleted after an export to another file): "
                     "export to a new file; nothing was written")


def mark_exported(directory: Path, last: DecodedRecord, destination: Path) -> int:
    """Move the export marker up to ``last.seq`` (never down). Returns the marker's value."""
    directory = Path(directory)
    through = max(read_exported_marker(directory), last.seq)
    marker = {"through_seq": through, "head": last.hash if through == last.seq else None,
              "destination": str(destination), "t_wall": time.time()}
    tmp = directory / (EXPORTED_NAME + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(marker, f, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / EXPORTED_NAME)
        _fsync_dir(directory)
    except OSError as exc:
        raise AuditError(f"exported to {destination}, but cannot write the export marker in {directory}: "
                         f"{exc}") from None
    return through


_NAMED = ("obs_tags", "act_tags", "obs_units", "act_units")  # from the config_load record


def _names(given: Any, n: int, default: str) -> list[str]:
    """The recorded names (or units) when they fit the data, else ``default.format(i)``."""
    if isinstance(given, list) and len(given) == n and all(isinstance(x, str) for x in given):
        return given
    return [default.format(i) for i in range(n)]


def export_hdf5(directory: Path, out: Path, *, since: float | None = None, until: float | None = None,
                plant: str | None = None) -> int:
    """Write the AUTO cycle history of the log as a training dataset; return its rows."""
    try:
        import numpy as np

        from training.datasets import DatasetMeta, write
    except ImportError as exc:
        raise AuditError(f"HDF5 export needs h5py, which is in the 'train' extra (pip install "
                         f"'edgewarden[train]'): {exc}") from None
    obs, act, nxt, ends = [], [], [], []
    info: dict[str, Any] = {"gateway": None, "model": None, **dict.fromkeys(_NAMED)}
    prev: dict[str, Any] | None = None  # the last usable AUTO cycle, waiting for its successor
    first_seq = last_seq = None
    for rec in select(iter_records(directory), since=since, until=until):
        p = rec.payload
        kind = p.get("kind")
        if kind == "config_load":
            info["gateway"] = p.get("gateway", info["gateway"])
            for key in _NAMED:
                info[key] = p.get(key, info[key])
        elif kind == "model_load":
            info["model"] = p.get("sha256", info["model"])
        if kind != "cycle":
            continue
        usable = (p.get("mode") == "AUTO" and isinstance(p.get("written"), list) and isinstance(p.get("obs"), list)
                  and all(isinstance(v, (int, float)) for v in p["obs"])
                  and all(isinstance(v, (int, float)) for v in p["written"]))
        if prev is not None:
            follows = isinstance(p.get("n"), int) and p["n"] == prev["n"] + 1 and isinstance(p.get("obs"), list)
            follows = follows and len(p["obs"]) == len(prev["obs"]) and all(
                isinstance(v, (int, float)) for v in p["obs"])
            if follows:
                obs.append(prev["obs"])
                act.append(prev["written"])
                nxt.append(p["obs"])
                ends.append(not usable)  # the run stops here unless this cycle continues it
                first_seq = prev["_seq"] if first_seq is None else first_seq
                last_seq = rec.seq
            elif ends:
                ends[-1] = True
        prev = dict(p, _seq=rec.seq) if usable else None
    if ends:
        ends[-1] = True
    n = len(obs)
    if n == 0:
        raise AuditError(f"{directory}: no consecutive AUTO cycle records to export in that range")
    n_obs, n_act = len(obs[0]), len(act[0])
    if any(len(o) != n_obs for o in obs) or any(len(a) != n_act for a in act):
        raise AuditError(f"{directory}: observation/action sizes change within the log; export a range "
                         "with --since/--until that covers one configuration")
    obs_tags = _names(info["obs_tags"], n_obs, "obs_{}")
    act_tags = _names(info["act_tags"], n_act, "act_{}")
    obs_units, act_units = _names(info["obs_units"], n_obs, ""), _names(info["act_units"], n_act, "")
    actions = np.asarray(act, dtype=np.float32)
    meta = DatasetMeta(
        plant=plant or info["gateway"] or "unknown",
        observation_tags=tuple(obs_tags), observation_units=tuple(obs_units),
        action_tags=tuple(act_tags), action_units=tuple(act_units),
        action_low=tuple(float(v) for v in actions.min(axis=0)),
        action_high=tuple(float(v) for v in actions.max(axis=0)),
        behaviour_policy=f"onnx:{info['model']}" if info["model"] else "unknown",
        extra={"source": "edgewarden audit export", "audit_export_version": HDF5_EXPORT_VERSION,
               "audit_dir": str(directory), "first_seq": first_seq, "last_seq": last_seq,
               "rewards": "not recorded"},
    )
    data = {
        "observations": np.asarray(obs, dtype=np.float32), "actions": actions,
        "rewards": np.zeros(n, dtype=np.float32), "next_observations": np.asarray(nxt, dtype=np.float32),
        "terminals": np.zeros(n, dtype=np.bool_), "timeouts": np.asarray(ends, dtype=np.bool_),
    }
    try:
        write(out, data, meta)
    except OSError as exc:
        raise AuditError(f"cannot write {out}: {exc}") from None
    return n
