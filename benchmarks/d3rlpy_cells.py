"""d3rlpy's IQL on the cells of the results table (docs/training.md), for the side-by-side.

    OMP_NUM_THREADS=1 PYTHONPATH=D3DIR .venv/bin/python benchmarks/d3rlpy_cells.py OUTDIR \
        [--plants cstr,tanks,hvac] [--qualities medium,expert,random,mixed] [--seeds 0,1,2]

OUTDIR is a results directory of ``python -m edgewarden.training.results``: the datasets it
collected (``OUTDIR/PLANT_QUALITY.h5``, collected here if missing, with the same command)
are fed to d3rlpy row for row (``MDPDataset`` rebuilds episodes and transitions from
consecutive rows, the D4RL layout our files have), with the table's settings: 64-64
networks for actor, critics and value, batch 256, Adam 3e-4, gamma 0.99, tau 0.005,
expectile 0.7, inverse temperature 3, weights <= 100, the same number of gradient steps as
our IQL cells, observations standardised, actions min-max scaled to the dataset's bounds,
one torch thread. Each cell is evaluated by the same function and episodes as ours
(``evaluate_policy``, env seeds 1000-1009) and kept as
``OUTDIR/cells/PLANT_QUALITY_d3rlpy-iql_sSEED.json``, so that
``python -m edgewarden.training.results OUTDIR --table-only --algos iql,d3rlpy-iql`` shows
both. d3rlpy is not a project dependency: install it into a directory of its own as
benchmarks/bench_train.py says, and put that directory on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from bench_train import d3rlpy_module

from edgewarden.training.collect import collect
from edgewarden.training.datasets import load
from edgewarden.training.evaluate import evaluate_policy
from edgewarden.training.results import DATASET_STEPS, EVAL_EPISODES, FIT_STEPS, HIDDEN, PLANTS, QUALITIES, SEEDS

NAME = "d3rlpy-iql"


def d3rlpy_dataset(d3rlpy, ds):  # noqa: ANN001, ANN201 (d3rlpy's types)
    """Our dataset as d3rlpy's MDPDataset, row for row."""
    return d3rlpy.dataset.MDPDataset(
        observations=ds.observations, actions=ds.actions, rewards=ds.rewards,
        terminals=ds.terminals.astype(np.float32), timeouts=ds.timeouts.astype(np.float32),
        action_space=d3rlpy.constants.ActionSpace.CONTINUOUS)


def iql(d3rlpy, ds, hidden: tuple[int, ...] = HIDDEN):  # noqa: ANN001, ANN201
    """d3rlpy's IQL configured as our table's IQL cells, built on the dataset."""
    data = d3rlpy_dataset(d3rlpy, ds)
    enc = d3rlpy.models.VectorEncoderFactory(hidden_units=list(hidden))
    obs_scaler = d3rlpy.preprocessing.StandardObservationScaler()
    obs_scaler.fit_with_transition_picker(data.episodes, data.transition_picker)  # as fit() would
    cfg = d3rlpy.algos.IQLConfig(
        batch_size=256, gamma=0.99, tau=0.005, expectile=0.7, weight_temp=3.0, max_weight=100.0,
        actor_learning_rate=3e-4, critic_learning_rate=3e-4,
        actor_encoder_factory=enc, critic_encoder_factory=enc, value_encoder_factory=enc,
        observation_scaler=obs_scaler,
        action_scaler=d3rlpy.preprocessing.MinMaxActionScaler(minimum=np.asarray(ds.meta.action_low, np.float32),
                                                              maximum=np.asarray(ds.meta.action_high, np.float32)))
    algo = cfg.create(device="cpu:0")
    algo.build_with_dataset(data)
    return algo, data


def cell(d3rlpy, plant: str, ds, seed: int, steps: int) -> dict:  # noqa: ANN001
    d3rlpy.seed(seed)
    algo, data = iql(d3rlpy, ds)
    t = time.perf_counter()
    for _ in range(steps):
        algo.update(data.sample_transition_batch(256))
    secs = time.perf_counter() - t
    lo, hi = np.asarray(ds.meta.action_low), np.asarray(ds.meta.action_high)

    def fn(obs: np.ndarray) -> np.ndarray:
        return np.clip(algo.predict(np.asarray(obs, np.float32)), lo, hi)

    r = evaluate_policy(plant, fn, episodes=EVAL_EPISODES).to_dict()
    return {**r, "fit_seconds": secs, "d3rlpy": d3rlpy.__version__}


def main() -> None:
    csv = lambda s: tuple(s.split(","))  # noqa: E731
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--plants", type=csv, default=PLANTS)
    ap.add_argument("--qualities", type=csv, default=QUALITIES)
    ap.add_argument("--seeds", type=lambda s: tuple(int(x) for x in s.split(",")), default=SEEDS)
    a = ap.parse_args()
    torch.set_num_threads(1)
    d3rlpy = d3rlpy_module()
    (a.out / "cells").mkdir(parents=True, exist_ok=True)
    for plant in a.plants:
        for q in a.qualities:
            path = a.out / f"{plant}_{q}.h5"
            if not path.exists():
                collect(plant, q, DATASET_STEPS, path, seed=0, progress=False)
            ds = load(path)
            for seed in a.seeds:
                out = a.out / "cells" / f"{plant}_{q}_{NAME}_s{seed}.json"
                if out.exists():
                    continue
                r = cell(d3rlpy, plant, ds, seed, FIT_STEPS["iql"])
                out.write_text(json.dumps(r) + "\n")
                print(f"{plant} {q} {NAME} s{seed}: score {r['normalized_score']:.1f}, violations "
                      f"{r['violation_rate']:.4f}, fit {r['fit_seconds']:.0f} s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
