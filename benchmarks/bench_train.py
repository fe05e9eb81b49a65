"""Training throughput: gradient steps/s of TD3+BC and IQL at batch 256 on CPU, beside d3rlpy,
and collection transitions/s.

    .venv/bin/python benchmarks/bench_train.py [--steps 300] [--rounds 3] [--d3rlpy]

Same dataset (a CSTR ``medium`` dataset collected here), same network sizes (256-256
actor and critics), same batch (256), same preprocessing (standardised observations,
actions scaled to [-1, 1]); both sides time only ``update(batch)`` calls with batches
sampled from their own replay, interleaved in rounds so background load hits both
alike. The median round is reported.

Threads: both sides get ``--threads`` intra-op threads (2 on the CI-class machine). Our
IQL uses them as two concurrent updates with one intra-op thread each (V + actor beside
Q: independent within a step, see edgewarden/training/algos/iql.py); the line ``iql sequential`` is
the same code with ``concurrent=False`` (one update at a time on the intra-op threads),
measured in the same rounds.

d3rlpy 2.8.1 cannot be installed into the project venv (it pins gymnasium==1.0.0, the
twin env needs 1.4): ``pip install --no-deps --target DIR d3rlpy==2.8.1 gym==0.26.2
gym-notices dataclasses-json marshmallow typing-inspect mypy-extensions tqdm colorama``,
then run with ``PYTHONPATH=DIR`` and ``--d3rlpy``. Its PRDC module imports
scikit-learn at import time; this script stubs ``sklearn.neighbors`` (PRDC is not used).
Without ``--d3rlpy``, only the plain-torch figures are printed.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import os
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch
from _common import machine

from edgewarden.training.algos import make_algorithm
from edgewarden.training.collect import collect
from edgewarden.training.datasets import load
from edgewarden.training.nets import Replay, obs_stats


def ours(name: str, ds, steps: int, overrides: dict | None = None) -> float:
    st = obs_stats(ds)
    algo = make_algorithm(name, ds.meta.n_obs, ds.meta.n_act, st["mean"], st["std"], device="cpu", seed=0,
                          overrides=overrides)
    rep = Replay(ds, torch.device("cpu"), 0)
    for _ in range(20):
        algo.update(rep.sample(256))
    t = time.perf_counter()
    for _ in range(steps):
        algo.update(rep.sample(256))
    return steps / (time.perf_counter() - t)


def d3rlpy_module():  # noqa: ANN201 (the d3rlpy module, importable only where installed)
    """Import d3rlpy (from PYTHONPATH) with its one import-time dependency we do not need stubbed."""
    nb = types.ModuleType("sklearn.neighbors")
    nb.NearestNeighbors = lambda *a, **k: None  # only PRDC uses it
    sk = types.ModuleType("sklearn")
    sk.neighbors = nb
    for m in (sk, nb):  # torch._dynamo looks modules up with find_spec
        m.__spec__ = importlib.machinery.ModuleSpec(m.__name__, None)
    sys.modules.setdefault("sklearn", sk)
    sys.modules.setdefault("sklearn.neighbors", nb)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import d3rlpy
    return d3rlpy


def d3rlpy_factory():
    d3rlpy = d3rlpy_module()

    def run(name: str, ds, steps: int) -> float:
        lo = np.asarray(ds.meta.action_low, np.float32)
        hi = np.asarray(ds.meta.action_high, np.float32)
        data = d3rlpy.dataset.MDPDataset(
            observations=ds.observations, actions=ds.actions, rewards=ds.rewards,
            terminals=ds.terminals.astype(np.float32), timeouts=ds.timeouts.astype(np.float32),
            action_space=d3rlpy.constants.ActionSpace.CONTINUOUS)
        common = dict(batch_size=256, observation_scaler=d3rlpy.preprocessing.StandardObservationScaler(),
                      action_scaler=d3rlpy.preprocessing.MinMaxActionScaler(minimum=lo, maximum=hi))
        # fit the observation scaler as fit() would, before the networks are built
        common["observation_scaler"].fit_with_transition_picker(data.episodes, data.transition_picker)
        cfg = (d3rlpy.algos.TD3PlusBCConfig(**common) if name == "td3bc" else d3rlpy.algos.IQLConfig(**common))
        d3rlpy.seed(0)
        algo = cfg.create(device="cpu:0")
        algo.build_with_dataset(data)
        for _ in range(20):
            algo.update(data.sample_transition_batch(256))
        t = time.perf_counter()
        for _ in range(steps):
            algo.update(data.sample_transition_batch(256))
        return steps / (time.perf_counter() - t)

    return run, d3rlpy.__version__


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--d3rlpy", action="store_true", help="compare with d3rlpy (importable: see above)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cstr_medium.h5"
        c = collect("cstr", "medium", 50_000, path, seed=0, n_envs=8, progress=False)
        ds = load(path)
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {machine()}; "
          f"x{torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print(f"collection: {c.transitions_per_s:,.0f} transitions/s (cstr, medium, 8 vectorised envs, 50k)")
    d3 = None
    if args.d3rlpy:
        d3, ver = d3rlpy_factory()
        print(f"d3rlpy {ver}")
    variants = [("td3bc", "td3bc", None), ("iql", "iql", None), ("iql sequential", "iql", {"concurrent": False})]
    for name in ("td3bc", "iql"):
        mine = [v for v in variants if v[1] == name]
        a: dict[str, list[float]] = {label: [] for label, _, _ in mine}
        b: list[float] = []
        for _ in range(args.rounds):
            for label, _, ov in mine:
                a[label].append(ours(name, ds, args.steps, ov))
            if d3 is not None:
                b.append(d3(name, ds, args.steps))
        for label, _, _ in mine:
            med = statistics.median(a[label])
            line = f"{label}: edgewarden {med:.0f} steps/s"
            if b:
                line += f", d3rlpy {statistics.median(b):.0f} steps/s, ratio {med / statistics.median(b):.2f}x"
            print(line + f"  (load {_loadavg()}; batch 256, 256-256, obs {ds.meta.n_obs}, act {ds.meta.n_act}, "
                         f"median of {args.rounds} rounds x {args.steps} steps)")


if __name__ == "__main__":
    main()
