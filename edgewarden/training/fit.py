"""The training loop: sample, update, log, evaluate, checkpoint, resume.

A run lives in one directory::

    RUN/last.pt            checkpoint (written atomically every ``checkpoint_every`` steps and at the end)
    RUN/metrics.jsonl      one JSON object per logged step or evaluation
    RUN/metrics.csv        the same, long format: step,wall_s,name,value

``fit(..., resume=True)`` on a directory with ``last.pt`` continues from its step with the
networks, optimisers, replay generator and algorithm generator restored, so an
interrupted run resumed to N steps equals one run of N steps (tested).

``fit(..., nproc=N)`` (``--nproc N``) or a torchrun launch trains data-parallel:
DistributedDataParallel over gloo (CPU) or nccl (CUDA), each rank its own seeded batch
stream, rank 0 alone writing (edgewarden.training.distributed explains the details).

A checkpoint is self-describing (algorithm, config, dataset metadata and hash, obs
statistics, seed), which is everything ``train export`` needs.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgewarden.training.algos import ALGOS, Algorithm, make_algorithm, make_config
from edgewarden.training.uncertainty import calibrate
from edgewarden.training.datasets import Dataset, DatasetMeta, load, read_meta
from edgewarden.training.nets import Replay, obs_stats
from edgewarden.training.progress import Progress

__all__ = ["CHECKPOINT_VERSION", "FitResult", "fit", "load_checkpoint", "policy_fn", "read_checkpoint"]

# 3: tensors and state dicts only (loaded with weights_only=True), everything else in one
#    JSON document under "meta"; 2: a pickle of the same (twin critics as one EnsembleQ)
CHECKPOINT_VERSION = 3
_TENSOR_KEYS = ("algo_state", "replay_gen", "rank_streams")  # the rest of a checkpoint is JSON


@dataclass(frozen=True)
class FitResult:
    run_dir: Path
    steps: int
    seconds: float  # wall clock of the whole fit: loading (and process start) included, alone or not
    last_eval: dict[str, float] | None


def _save(path: Path, ck: dict[str, Any]) -> None:
    """A checkpoint: its tensors and state dicts as they are, everything else as one JSON
    document (so it loads with ``weights_only=True``: no pickled Python objects)."""
    meta = {k: v for k, v in ck.items() if k not in _TENSOR_KEYS}
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"meta": json.dumps(meta, allow_nan=True), **{k: ck[k] for k in _TENSOR_KEYS}}, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint as one dict (its JSON document and its tensors); GatewayError when
    it is not an edgewarden checkpoint of this version."""
    from edgewarden.gateway.errors import GatewayError

    try:
        raw = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise GatewayError(f"checkpoint {str(path)!r} not found") from None
    except pickle.UnpicklingError:  # needs Python objects to load: never unpickled here
        raise GatewayError(f"checkpoint {str(path)!r}: not an edgewarden checkpoint of version "
                           f"{CHECKPOINT_VERSION}: it cannot be read as tensors and JSON alone (an older "
                           "version's checkpoint, or not a checkpoint); train it again with this version") from None
    except Exception as exc:  # noqa: BLE001 - not a torch file: its parser fails in many ways (KeyError, EOFError...)
        raise GatewayError(f"checkpoint {str(path)!r}: not an edgewarden checkpoint of version "
                           f"{CHECKPOINT_VERSION} ({type(exc).__name__})") from None
    try:
        ck = {**json.loads(raw["meta"]), **{k: raw[k] for k in _TENSOR_KEYS}}
    except (TypeError, KeyError, ValueError):
        ck = {}
    if ck.get("format") != CHECKPOINT_VERSION:
        raise GatewayError(f"checkpoint {str(path)!r}: not an edgewarden checkpoint of version {CHECKPOINT_VERSION}")
    return ck


def load_checkpoint(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[Algorithm, dict[str, Any]]:
    """Rebuild the algorithm from a checkpoint; returns (algorithm, checkpoint dict)."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    from edgewarden.gateway.errors import ConfigError, GatewayError

    ck = read_checkpoint(path, device)
    meta = DatasetMeta.from_dict(ck["dataset_meta"])
    try:
        algo = make_algorithm(ck["algo"], meta.n_obs, meta.n_act, np.asarray(ck["obs_stats"]["mean"]),
                              np.asarray(ck["obs_stats"]["std"]), device=device, seed=ck["seed"],
                              overrides=_cfg_from_dict(ck["algo"], ck["config"]))
    except ConfigError as exc:
        raise GatewayError(f"checkpoint {path}: its settings are not accepted by this version "
                           f"({str(exc).removeprefix('--set for ')})") from None
    algo.load_state_dict(ck["algo_state"])
    return algo, ck


def _cfg_from_dict(algo: str, d: dict[str, Any]) -> dict[str, Any]:
    """A saved config as overrides; settings added since it was saved take the value it was trained with."""
    saved_before = getattr(ALGOS[algo][1], "SAVED_BEFORE", {}) if algo in ALGOS else {}
    return {**saved_before, **{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}}


def policy_fn(algo: Algorithm, meta: DatasetMeta):
    """The deterministic policy in engineering units, for evaluation in torch."""
    lo, hi = np.asarray(meta.action_low), np.asarray(meta.action_high)
    mid, half = (hi + lo) / 2, (hi - lo) / 2

    def fn(obs: np.ndarray) -> np.ndarray:
        return np.clip(mid + algo.act(obs) * half, lo, hi)

    return fn


class _Metrics:
    """metrics.jsonl + metrics.csv (+ TensorBoard) of a run; only rank 0 opens one."""

    def __init__(self, run: Path, tensorboard: bool) -> None:
        self.jf = open(run / "metrics.jsonl", "a")
        new_csv = not (run / "metrics.csv").exists()
        self.cf = open(run / "metrics.csv", "a", newline="")
        self.cw = csv.writer(self.cf)
        if new_csv:
            self.cw.writerow(["step", "wall_s", "name", "value"])
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(run / "tb"))
            except ImportError:
                print("tensorboard not installed: metrics go to metrics.jsonl/csv only")

    def write(self, step: int, wall_s: float, row: dict[str, Any]) -> None:
        row = {"step": step, "wall_s": round(wall_s, 3), **row}
        self.jf.write(json.dumps(row) + "\n")
        self.jf.flush()
        for k, v in row.items():
            if k not in ("step", "wall_s") and isinstance(v, (int, float)):
                self.cw.writerow([step, row["wall_s"], k, v])
                if self.tb is not None:
                    self.tb.add_scalar(k, v, step)
        self.cf.flush()

    def close(self) -> None:
        self.jf.close()
        self.cf.close()
        if self.tb is not None:
            self.tb.close()


def fit(algo_name: str, dataset: str | os.PathLike[str] | Dataset, steps: int, run_dir: str | os.PathLike[str], *,
        seed: int | None = None, device: str = "cpu", eval_every: int = 0, eval_episodes: int = 5,
        checkpoint_every: int = 5000, log_every: int = 1000, resume: bool = False,
        overrides: dict[str, Any] | None = None, progress: bool = True, plant: str | None = None,
        tensorboard: bool = False, nproc: int = 1, force: bool = False,
        allow_degenerate_actions: bool = False) -> FitResult:
    """Train ``algo_name`` on ``dataset`` for ``steps`` gradient steps into ``run_dir``.

    ``nproc`` > 1 trains data-parallel in that many processes (edgewarden.training.distributed);
    under torchrun the process joins torchrun's group instead (leave ``nproc`` at 1).
    ``seed``: 0 when not given; a resumed run continues its own (another one is refused).
    """
    from edgewarden.gateway.errors import GatewayError
    from edgewarden.training import distributed as D

    if algo_name not in ALGOS:
        raise ValueError(f"unknown algorithm {algo_name!r} (known: {', '.join(ALGOS)})")
    if nproc < 1:
        raise GatewayError(f"--nproc must be >= 1, not {nproc}")
    t0 = time.perf_counter()
    _preflight(algo_name, dataset, steps, Path(run_dir), resume=resume, force=force, overrides=overrides, seed=seed,
               counts={"--checkpoint-every": (checkpoint_every, 0), "--log-every": (log_every, 0),  # 0: never
                       "--eval-every": (eval_every, 0), "--eval-episodes": (eval_episodes, 1)})
    env = D.torchrun_world()
    alone = nproc == 1  # this process trains (alone, or as one torchrun rank): it loads the data once, here
    loaded = dataset if isinstance(dataset, Dataset) else load(dataset)
    # every rank judges (the same verdict everywhere, so none waits for a rank that refused)
    _judge_data(algo_name, loaded, allow_degenerate_actions, warn=os.environ.get("RANK", "0") == "0")
    if eval_every > 0:
        _check_twin(plant, loaded.meta)
    data = loaded if alone else dataset  # spawned workers load the file themselves
    kw = dict(algo_name=algo_name, steps=steps, run_dir=run_dir, seed=0 if seed is None else seed, eval_every=eval_every,
              eval_episodes=eval_episodes, checkpoint_every=checkpoint_every, log_every=log_every,
              resume=resume, overrides=overrides, progress=progress, plant=plant, tensorboard=tensorboard)
    if env is not None and env[1] > 1:
        if nproc != 1:
            raise GatewayError(f"launched by torchrun with WORLD_SIZE={env[1]}: leave out --nproc "
                               "(torchrun's --nproc-per-node sets the processes)")
        rank, size, local = env
        dev = D.resolve_device(device, size, local)
        world = D.init(rank, size, local, dev, "env://")
        clean = False
        try:
            result = _train(data, dev, world, **kw)
            clean = True
            return replace(result, seconds=time.perf_counter() - t0)  # as counted under --nproc
        finally:
            D.close(clean=clean)
    if nproc == 1:
        result = _train(data, D.resolve_device(device, 1, 0), None, **kw)
        return replace(result, seconds=time.perf_counter() - t0)  # as counted under --nproc
    D.resolve_device(device, nproc, 0)  # refuse impossible device/process combinations before spawning
    if isinstance(dataset, Dataset):
        raise GatewayError("--nproc > 1 needs the dataset as a file path (each process loads it)")
    import torch.multiprocessing as mp

    run = Path(run_dir)
    start = _checkpoint_step(run / "last.pt") if resume else 0
    # rendezvous through a file, not a TCP port: a port found free here can be taken by
    # another program before rank 0 binds it
    with tempfile.TemporaryDirectory(prefix="edgewarden-ddp-") as rdv:
        try:
            mp.start_processes(_spawned, args=(nproc, f"file://{rdv}/rendezvous", str(dataset), device, kw),
                               nprocs=nproc, join=True, start_method="spawn")
        except mp.ProcessRaisedException as e:
            last = [ln for ln in str(e).strip().splitlines() if ln.strip()][-1]
            raise GatewayError(f"data-parallel training failed in a worker: {last}") from None
        except mp.ProcessExitedException as e:
            raise GatewayError(f"data-parallel training failed: {e}") from None
    last_eval = None
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "eval_normalized_score" in row:
            last_eval = {k: v for k, v in row.items() if k.startswith("eval_")}
    return FitResult(run_dir=run, steps=_checkpoint_step(run / "last.pt") - start,
                     seconds=time.perf_counter() - t0, last_eval=last_eval)


def _preflight(algo_name: str, dataset: str | os.PathLike[str] | Dataset, steps: int, run: Path, *, resume: bool,
               force: bool, overrides: dict[str, Any] | None, counts: dict[str, tuple[int, int]],
               seed: int | None = None) -> None:
    """Everything that can be refused before a process is spawned or a file written: the
    counts, every --set value, the dataset file, and what the run directory already holds
    (a run is continued only as it was configured, and replaced only when asked)."""
    from dataclasses import asdict

    from edgewarden.gateway.errors import GatewayError

    if steps < 1:
        raise GatewayError(f"--steps must be at least 1 (got {steps}): the total of gradient steps")
    for flag, (value, least) in counts.items():
        if value < least:
            raise GatewayError(f"{flag} must be at least {least} (got {value})")
    make_config(algo_name, overrides)
    if not isinstance(dataset, Dataset):
        read_meta(dataset)  # a missing or unreadable file is named now, not inside a worker
    ckpt = run / "last.pt"
    if not resume:
        if ckpt.exists() and not force:
            try:
                held = f"last.pt, step {_checkpoint_step(ckpt)}"
            except GatewayError:
                held = "an unreadable last.pt"
            raise GatewayError(f"{run} already holds a run ({held}): --resume continues it, --force replaces "
                               "it, or choose another --out")
        if force:  # nothing of the old run may be resumed later, nor mixed into the new one's logs
            import shutil

            ckpt.unlink(missing_ok=True)
            shutil.rmtree(run / "tb", ignore_errors=True)
        return
    if not ckpt.exists():
        raise GatewayError(f"--resume: {run} holds no checkpoint (last.pt) to continue; leave out --resume "
                           "to start a run there")
    ck = read_checkpoint(ckpt)
    if ck["algo"] != algo_name:
        raise GatewayError(f"--resume: {run} is a {ck['algo']} run, not {algo_name}: resume it with --algo "
                           f"{ck['algo']}, or train {algo_name} into another --out")
    saved = _cfg_from_dict(ck["algo"], ck["config"])
    before, after = asdict(make_config(algo_name, saved)), asdict(make_config(algo_name, {**saved, **(overrides or {})}))
    changed = [f"{k}={after[k]!r} (the run's: {before[k]!r})" for k in after if after[k] != before[k]]
    if changed:
        raise GatewayError(f"--resume continues {run} with its own settings; these --set values differ from them: "
                           f"{', '.join(changed)}. Train with them into another --out")
    if steps <= int(ck["step"]):
        raise GatewayError(f"--resume: {run} is already at step {ck['step']}; --steps is the total, so give more "
                           f"than {ck['step']}")
    if seed is not None and seed != ck["seed"]:
        raise GatewayError(f"--resume continues {run} with its own random streams (seed {ck['seed']}); --seed {seed} "
                           "would not be used: leave it out, or train with it into another --out")


def _check_twin(plant: str | None, meta: DatasetMeta) -> None:
    """--eval-every evaluates on a twin: it must exist and read and drive these tags."""
    from edgewarden.gateway.errors import GatewayError
    from edgewarden.training.evaluate import twin_mismatch

    problem = twin_mismatch(plant or meta.plant, meta.observation_tags, meta.action_tags)
    if problem is not None:
        raise GatewayError(f"--eval-every: {problem}; leave out --eval-every (or pass --plant) for this dataset")


def _judge_data(algo_name: str, dataset: Dataset, allow: bool, *, warn: bool = True) -> None:
    """The dataset report's problems: a warning for BC and IQL (they learn only from the
    recorded actions), a refusal for TD3+BC and CQL (their critic extrapolates) unless
    ``allow``."""
    import sys

    from edgewarden.gateway.errors import GatewayError
    from edgewarden.training.dataset_report import CRITIC_ALGOS, inspect_dataset

    report = inspect_dataset(dataset)
    problems, degenerate = report.problems(), report.action_problems()
    if not problems or not (warn or algo_name in CRITIC_ALGOS):
        return
    if algo_name in CRITIC_ALGOS and degenerate and not allow:
        raise GatewayError(f"{algo_name} refused on this dataset: {'; '.join(degenerate)}. Its critic would have to "
                           "extrapolate Q where the data shows nothing, and can diverge: train bc or iql, collect "
                           "data that moves these actions, or pass --allow-degenerate-actions to train anyway "
                           "(edgewarden train inspect shows the whole report)")
    if warn:
        for p in problems:
            print(f"warning: {p} (edgewarden train inspect DATASET)", file=sys.stderr)


def _checkpoint_step(path: Path) -> int:
    return int(read_checkpoint(path)["step"]) if path.exists() else 0


def _spawned(rank: int, size: int, init_method: str, dataset: str, device: str, kw: dict[str, Any]) -> None:
    """Entry point of one process started by ``fit(..., nproc=N)``."""
    from edgewarden.training import distributed as D

    if "OMP_NUM_THREADS" not in os.environ:  # share the cores instead of oversubscribing them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // size))
    dev = D.resolve_device(device, size, rank)
    world = D.init(rank, size, rank, dev, init_method)
    clean = False
    try:
        _train(dataset, dev, world, **kw)
        clean = True
    finally:
        D.close(clean=clean)
    D.end_worker()


def _train(dataset: str | os.PathLike[str] | Dataset, dev: torch.device, world, *, algo_name: str, steps: int,
           run_dir: str | os.PathLike[str], seed: int, eval_every: int, eval_episodes: int, checkpoint_every: int,
           log_every: int, resume: bool, overrides: dict[str, Any] | None, progress: bool, plant: str | None,
           tensorboard: bool) -> FitResult:
    """The training loop of one process (``world`` is None when training alone)."""
    from edgewarden.gateway.errors import GatewayError
    from edgewarden.training import distributed as D

    rank, size = (world.rank, world.size) if world else (0, 1)
    main = rank == 0
    run = Path(run_dir)
    try:
        run.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file of that name, a read-only place: one line naming it
        raise GatewayError(f"fit --out {run}: cannot use it as the run's directory "
                           f"({'a file is in the way' if run.exists() else exc.strerror or exc})") from None
    ds = dataset if isinstance(dataset, Dataset) else load(dataset)
    stats = obs_stats(ds)
    ckpt_path = run / "last.pt"
    if resume and ckpt_path.exists():
        algo, ck = load_checkpoint(ckpt_path, dev)
        if ck["dataset_meta"]["content_hash"] != ds.meta.content_hash:
            raise GatewayError(f"cannot resume {str(run)!r}: it was trained on dataset "
                               f"{ck['dataset_meta']['content_hash']}, not {ds.meta.content_hash}")
        if ck.get("world_size", 1) != size:
            raise GatewayError(f"cannot resume {str(run)!r} with {size} process(es): it was trained with "
                               f"{ck.get('world_size', 1)} (each process continues its own random stream)")
        seed = ck["seed"]
        replay = Replay(ds, dev, seed, reward_scale=ck.get("reward_scale", 1.0))
        replay.gen.set_state(ck["replay_gen"])
        if rank > 0:
            replay_state, algo_state = ck["rank_streams"][rank]
            replay.gen.set_state(replay_state)
            algo.gen.set_state(algo_state)
    else:
        algo = make_algorithm(algo_name, ds.meta.n_obs, ds.meta.n_act, stats["mean"], stats["std"],
                              device=dev, seed=seed, overrides=overrides)
        replay = Replay(ds, dev, D.rank_seed(seed, rank))
        if rank > 0:  # same initial networks on every rank, its own noise stream
            algo.gen.manual_seed(D.rank_seed(seed + 1, rank))
        if main:
            for p in (run / "metrics.jsonl", run / "metrics.csv"):
                p.unlink(missing_ok=True)
    if world:
        algo.data_parallel()
    plant = plant or ds.meta.plant
    batch_size = algo.cfg.batch_size

    def checkpoint() -> None:
        streams = D.all_gather((replay.gen.get_state(), algo.gen.get_state()), world) if world else None
        if main:
            _save(ckpt_path, {
                "format": CHECKPOINT_VERSION, "algo": algo.name, "config": algo.config_dict(),
                "algo_state": algo.state_dict(), "replay_gen": replay.gen.get_state(),
                "dataset_meta": ds.meta.to_dict(), "obs_stats": {k: v.tolist() for k, v in stats.items()},
                "seed": seed, "step": algo.step, "reward_scale": 1.0, "world_size": size, "rank_streams": streams,
                # the critic's disagreement over the data's states, for the export's uncertainty output
                "uncertainty": calibrate(algo, ds.observations, seed),
            })

    metrics = _Metrics(run, tensorboard) if main else None
    t0 = time.perf_counter()
    start = algo.step
    bar = Progress(steps, f"fit {algo.name}" + (f" x{size}" if size > 1 else ""), enabled=progress and main,
                   initial=start)
    sums: dict[str, Any] = {}
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
                if world:
                    row = D.mean_over_ranks(row, world, dev)
                row["steps_per_s"] = count / max(now - t_log, 1e-9)
                if metrics:
                    metrics.write(algo.step, now - t0, row)
                sums, count, t_log = {}, 0, now
            if main and eval_every and (s % eval_every == 0 or s == steps):
                from edgewarden.training.evaluate import evaluate_policy
                r = evaluate_policy(plant, policy_fn(algo, ds.meta), episodes=eval_episodes)
                last_eval = {f"eval_{k}": float(v) for k, v in r.to_dict().items()}
                if metrics:
                    metrics.write(algo.step, time.perf_counter() - t0, last_eval)
                bar.postfix = f"score {r.normalized_score:.1f}"
                t_log = time.perf_counter()
            if checkpoint_every and s % checkpoint_every == 0:
                checkpoint()
        checkpoint()
        if world:  # the replicas must have stayed identical: compare their parameters
            digests = D.all_gather(D.param_digest(algo.modules), world)
            if metrics:
                metrics.write(algo.step, time.perf_counter() - t0, {"rank_param_sha256": digests})
            if len(set(digests)) != 1:
                raise GatewayError(f"data-parallel replicas diverged: parameter digests differ across ranks {digests}")
    finally:
        bar.close()
        if metrics:
            metrics.close()
    return FitResult(run_dir=run, steps=algo.step - start, seconds=time.perf_counter() - t0, last_eval=last_eval)
