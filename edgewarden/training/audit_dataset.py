"""A training dataset from the gateway's audit log (``edgewarden train from-audit``).

Builds the D4RL layout of edgewarden/training/datasets.py from consecutive ``cycle`` records in
AUTO: row i is (obs of cycle n, action written in cycle n, obs of cycle n+1). A run ends
where the next cycle is missing, not AUTO, wrote nothing or has a missing observation:
that row gets ``timeouts = True``. The gateway does not record a reward: a
:class:`~edgewarden.training.reward.RewardSpec` (tracking error against a setpoint tag or a
constant, move effort, distance beyond soft limits) computes it and is stored with the
data (``extra.reward_spec``); without one ``rewards`` are zeros (``extra.rewards = "not
recorded"``; behaviour cloning needs none). Names, units and the actions' configured
bounds come from the log's ``config_load`` record (the last one at or before the first
exported cycle: a ``since`` after the start keeps them); the behaviour policy (a model, or
the pid or hold controller) from the ``model_load`` and swap records, wherever they are.
A log written before the bounds were recorded gets the data's own extremes, and says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgewarden.gateway.audit.jsonl import in_window
from edgewarden.gateway.audit.verify import iter_records
from edgewarden.gateway.errors import AuditError
from edgewarden.training.datasets import DatasetError, DatasetMeta, write
from edgewarden.training.reward import RewardError, RewardSpec

EXPORT_VERSION = 1  # the "audit_export_version" in the dataset's extra metadata
_NAMED = ("obs_tags", "act_tags", "obs_units", "act_units", "act_low", "act_high", "cycle_hz", "pid")  # config_load


def _names(given: Any, n: int, default: str) -> list[str]:
    """The recorded names (or units) when they fit the data, else ``default.format(i)``."""
    if isinstance(given, list) and len(given) == n and all(isinstance(x, str) for x in given):
        return given
    return [default.format(i) for i in range(n)]


def dataset_from_audit(directory: Path, out: Path, *, since: float | None = None, until: float | None = None,
                       plant: str | None = None, reward: RewardSpec | None = None) -> int:
    """Write the AUTO cycle history of the log as a training dataset; return its rows."""
    if not directory.is_dir():
        raise AuditError(f"{directory}: not a directory")
    if out.exists():
        raise AuditError(f"{out} exists: choose a new file (a dataset is never overwritten)")
    obs, act, nxt, ends = [], [], [], []
    info: dict[str, Any] = {"gateway": None, "loaded": None, **dict.fromkeys(_NAMED)}
    kinds: dict[str, str] = {}  # model hash prefix (as in cycle records) -> onnx, pid or hold
    behaviours: dict[str, None] = {}  # the policies that wrote the exported rows, in order
    prev: dict[str, Any] | None = None  # the last usable AUTO cycle, waiting for its successor
    first_seq = last_seq = None
    excited = 0  # rows written under an operator's excitation (edgewarden excite)
    for rec in iter_records(directory):
        p = rec.payload
        kind = p.get("kind")
        if kind == "config_load" and (first_seq is None or in_window(p, since, until)):
            # the configuration in force: the last loaded before the window, or within it
            info["gateway"] = p.get("gateway", info["gateway"])
            for key in _NAMED:
                info[key] = p.get(key, info[key])
        elif kind in ("model_load", "model_swap", "model_promote", "model_rollback") and isinstance(
                p.get("sha256"), str):
            # a controller is loaded only at start (its model_load names it); anything swapped in is a model
            algorithm = p.get("algorithm")
            kinds.setdefault(p["sha256"][:16], algorithm if algorithm in ("pid", "hold") else "onnx")
            if kind == "model_load":
                info["loaded"] = f"{kinds[p['sha256'][:16]]}:{p['sha256']}"
        if kind != "cycle" or not in_window(p, since, until):
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
                model = prev.get("model")
                if isinstance(model, str):
                    behaviours[f"{kinds.get(model, 'onnx')}:{model}"] = None
                act.append(prev["written"])
                excited += isinstance(prev.get("excite"), list)
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
    next_obs = np.asarray(nxt, dtype=np.float32)
    low, high = info["act_low"], info["act_high"]
    configured = all(isinstance(b, list) and len(b) == n_act and all(isinstance(v, (int, float)) for v in b)
                     for b in (low, high))
    if not configured:  # a log from before the bounds were recorded: the data's own extremes
        low, high = actions.min(axis=0).tolist(), actions.max(axis=0).tolist()
    try:
        spec = (reward or RewardSpec()).bind(obs_tags)
    except RewardError as e:
        raise DatasetError(str(e)) from None
    prev_act = np.concatenate([actions[:1], actions[:-1]])
    starts = np.concatenate([[True], np.asarray(ends[:-1], dtype=bool)])
    prev_act[starts] = actions[starts]  # a run's first move is measured from itself
    rewards = spec(next_obs.astype(np.float64), actions.astype(np.float64), prev_act.astype(np.float64),
                   np.asarray(high, np.float64) - np.asarray(low, np.float64)).astype(np.float32)
    reward_note = "not recorded" if not spec.defined else "r = " + spec.describe() + " (edgewarden/training/reward.py)"
    if not behaviours:  # cycle records without a model field: the model loaded at start
        behaviour = info["loaded"] or "unknown"
    else:
        behaviour = next(iter(behaviours)) if len(behaviours) == 1 else "mixed: " + ", ".join(behaviours)
    meta = DatasetMeta(
        plant=plant or info["gateway"] or "unknown",
        observation_tags=tuple(obs_tags), observation_units=tuple(obs_units),
        action_tags=tuple(act_tags), action_units=tuple(act_units),
        action_low=tuple(float(v) for v in low), action_high=tuple(float(v) for v in high),
        behaviour_policy=behaviour,
        extra={"source": "edgewarden train from-audit", "audit_export_version": EXPORT_VERSION,
               "audit_dir": str(directory), "first_seq": first_seq, "last_seq": last_seq,
               "rewards": reward_note, **({"reward_spec": spec.to_dict()} if spec.defined else {}),
               "excited_rows": excited,
               **({"period_s": 1.0 / info["cycle_hz"]} if isinstance(info["cycle_hz"], (int, float))
                  and info["cycle_hz"] > 0 else {}),
               # the PID loops that wrote every row: the off-policy estimate runs them in closed loop
               **({"incumbent_pid": info["pid"]} if info["pid"] and behaviour.startswith("pid:") else {}),
               "action_bounds": "configured ([safety.actions])" if configured else "the data's own extremes"},
    )
    data = {
        "observations": np.asarray(obs, dtype=np.float32), "actions": actions,
        "rewards": rewards, "next_observations": next_obs,
        "terminals": np.zeros(n, dtype=np.bool_), "timeouts": np.asarray(ends, dtype=np.bool_),
    }
    try:
        write(out, data, meta)
    except OSError as exc:
        raise AuditError(f"cannot write {out}: {exc}") from None
    return n
