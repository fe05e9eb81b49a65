"""The training loop: sample, update, log, evaluate, checkpoint, resume.

A run lives in one directory::

    RUN/last.pt            checkpoint (written atomically every ``checkpoint_every`` steps and at the end)
    RUN/metrics.jsonl      one JSON object per logged step or evaluation
    RUN/metrics.csv        the same, long format: step,wall_s,name,value

``fit(..., resume=True)`` on a directory with ``last.pt`` continues from its step with the
networks, optimisers, replay generator and algorithm generator restored, so an
interrupted run resumed to N steps equals one run of N steps (tested).

A checkpoint is self-describing (algorithm, config, dataset metadata and hash, obs
statistics, seed), which is everything ``train export`` needs.
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.algos import ALGOS, Algorithm, make_algorithm
from training.datasets import Dataset, DatasetMeta, load
from training.nets import Replay, obs_stats
from training.progress import Progress

__all__ = ["CHECKPOINT_VERSION", "FitResult", "fit", "load_checkpoint", "policy_fn"]

CHECKPOINT_VERSION = 2  # 2: twin critics stored as one EnsembleQ (version 1 held q1/q2 MLPs)


@dataclass(frozen=True)
class FitResult:
    run_dir: Path
    steps: int
    seconds: float
    last_eval: dict[str, float] | None


def _save(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[Algorithm, dict[str, Any]]:
    """Rebuild the algorithm from a checkpoint; returns (algorithm, checkpoint dict)."""
    from gateway.errors import GatewayError

    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    try:
        ck = torch.load(path, map_location=device, weights_only=False)
    except FileNotFoundError:
        raise GatewayError(f"checkpoint {str(path)!r} not found") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_VERSION:
        raise GatewayError(f"checkpoint {str(path)!r}: not an edgewarden checkpoint of version {CHECKPOINT_VERSION}")
    meta = DatasetMeta.from_dict(ck["dataset_meta"])
    algo = make_algorithm(ck["algo"], meta.n_obs, meta.n_act, np.asarray(ck["obs_stats"]["mean"]),
                          np.asarray(ck["obs_stats"]["std"]), device=device, seed=ck["seed"],
                          overrides=_cfg_from_dict(ck["algo"], ck["config"]))
    algo.load_state_dict(ck["algo_state"])
    return algo, ck


def _cfg_from_dict(algo: str, d: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def policy_fn(algo: Algorithm, meta: DatasetMeta):
    """The deterministic policy in engineering units, for evaluation in torch."""
    lo, hi = np.asarray(meta.action_low), np.asarray(meta.action_high)
    mid, half = (hi + lo) / 2, (hi - lo) / 2

    def fn(obs: np.ndarray) -> np.ndarray:
        return np.clip(mid + algo.act(obs) * half, lo, hi)

    return fn


def fit(algo_name: str, dataset: str | os.PathLike[str] | Dataset, steps: int, run_dir: str | os.PathLike[str], *,
        seed: int = 0, device: str = "cpu", eval_every: int = 0, eval_episodes: int = 5,
        checkpoint_every: int = 5000, log_every: int = 1000, resume: bool = False,
        overrides: dict[str, Any] | None = None, progress: bool = True, plant: str | None = None,
        tensorboard: bool = False) -> FitResult:
    if algo_name not in ALGOS:
        raise ValueError(f"unknown algorithm {algo_name!r} (known: {', '.join(ALGOS)})")
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    ds = dataset if isinstance(dataset, Dataset) else load(dataset)
    dev = torch.device(device)
    stats = obs_stats(ds)
    ckpt_path = run / "last.pt"
    if resume and ckpt_path.exists():
        algo, ck = load_checkpoint(ckpt_path, dev)
        if ck["dataset_meta"]["content_hash"] != ds.meta.content_hash:
            from gateway.errors import GatewayError
            raise GatewayError(f"cannot resume {str(run)!r}: it was trained on dataset "
                               f"{ck['dataset_meta']['content_hash']}, not {ds.meta.content_hash}")
        replay = Replay(ds, dev, seed, reward_scale=ck.get("reward_scale", 1.0))
        replay.gen.set_state(ck["replay_gen"])
        seed = ck["seed"]
    else:
        algo = make_algorithm(algo_name, ds.meta.n_obs, ds.meta.n_act, stats["mean"], stats["std"],
                              device=dev, seed=seed, overrides=overrides)
        replay = Replay(ds, dev, seed)
        for p in (run / "metrics.jsonl", run / "metrics.csv"):
            p.unlink(missing_ok=True)
    plant = plant or ds.meta.plant
    batch_size = algo.cfg.batch_size

    def checkpoint() -> None:
        _save(ckpt_path, {
            "format": CHECKPOINT_VERSION, "algo": algo.name, "config": algo.config_dict(),
            "algo_state": algo.state_dict(), "replay_gen": replay.gen.get_state(),
            "dataset_meta": ds.meta.to_dict(), "obs_stats": {k: v.tolist() for k, v in stats.items()},
            "seed": seed, "step": algo.step, "reward_scale": 1.0,
        })

    jf = open(run / "metrics.jsonl", "a")
    new_csv = not (run / "metrics.csv").exists()
    cf = open(run / "metrics.csv", "a", newline="")
    cw = csv.writer(cf)
    if new_csv:
        cw.writerow(["step", "wall_s", "name", "value"])
    tb = None
    if tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter
            tb = SummaryWriter(str(run / "tb"))
        except ImportError:
            print("tensorboard not installed: metrics go to metrics.jsonl/csv only")

    def log(row: dict[str, float]) -> None:
        row = {"step": algo.step, "wall_s": round(time.perf_counter() - t0, 3), **row}
        jf.write(json.dumps(row) + "\n")
        jf.flush()
        for k, v in row.items():
            if k not in ("step", "wall_s"):
                cw.writerow([row["step"], row["wall_s"], k, v])
                if tb is not None:
                    tb.add_scalar(k, v, algo.step)
        cf.flush()

    t0 = time.perf_counter()
    start = algo.step
    bar = Progress(steps, f"fit {algo.name}", enabled=progress, initial=start)
    sums: dict[str, float] = {}
    count = 0
    last_eval: dict[str, float] | None = None
    t_log = time.perf_counter()
    try:
        while algo.step < steps:
            m = algo.update(replay.sample(batch_size))
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            s = algo.step
            bar.update(1)
            if log_every and (s % log_every == 0 or s == steps):
                now = time.perf_counter()
                row = {k: float(v) / count for k, v in sums.items()}  # the only host read of the losses
                row["steps_per_s"] = count / max(now - t_log, 1e-9)
                log(row)
                sums, count, t_log = {}, 0, now
            if eval_every and (s % eval_every == 0 or s == steps):
                from training.evaluate import evaluate_policy
                r = evaluate_policy(plant, policy_fn(algo, ds.meta), episodes=eval_episodes)
                last_eval = {f"eval_{k}": float(v) for k, v in r.to_dict().items()}
                log(last_eval)
                bar.postfix = f"score {r.normalized_score:.1f}"
                t_log = time.perf_counter()
            if checkpoint_every and s % checkpoint_every == 0:
                checkpoint()
        checkpoint()
    finally:
        bar.close()
        jf.close()
        cf.close()
        if tb is not None:
            tb.close()
    return FitResult(run_dir=run, steps=algo.step - start, seconds=time.perf_counter() - t0, last_eval=last_eval)
