"""Training throughput beside d3rlpy: gradient steps/s of TD3+BC and IQL at batch 256 on CPU,
for 64-64 and 256-256 networks, the update alone and the whole training loop; and
collection transitions/s.

    .venv/bin/python benchmarks/bench_train.py [--steps 300] [--loop-steps 1000] [--rounds 3]
                                               [--hidden 64,64 256,256] [--d3rlpy]

Same dataset (a CSTR ``medium`` dataset collected here, in the D4RL layout both libraries
read: d3rlpy's ``MDPDataset`` rebuilds episodes and transitions from its consecutive rows),
same network sizes for actor, critics and value, same batch (256), same preprocessing
(standardised observations, actions scaled to [-1, 1]). Two measures, interleaved in rounds
so background load hits both sides alike, median round reported:

* **update**: only ``update(batch)`` calls with batches sampled from each side's own replay;
* **loop**: the whole training run as a user starts it, ``fit`` for ``--loop-steps`` steps
  (ours: ``edgewarden.training.fit.fit`` into a temporary run directory, with its sampling,
  loss bookkeeping and final checkpoint; d3rlpy: ``algo.fit`` with no logger and no progress
  bar, one epoch).

Threads: both sides get ``--threads`` intra-op threads (2 on the CI-class machine). Our
IQL uses them as two concurrent updates with one intra-op thread each (V + actor beside
Q: independent within a step, see edgewarden/training/algos/iql.py); the line ``iql sequential`` is
the same code with ``concurrent=False`` (one update at a time on the intra-op threads),
measured in the same rounds. Results go to stdout only; d3rlpy's own log lines and
warnings go to stderr.

d3rlpy 2.8.1 cannot be installed into the project venv (it pins gymnasium==1.0.0, the
twin env needs 1.4): ``pip install --no-deps --target DIR d3rlpy==2.8.1 gym==0.26.2
gym-notices dataclasses-json marshmallow typing-inspect mypy-extensions tqdm colorama``,
then run with ``PYTHONPATH=DIR`` and ``--d3rlpy``. Its PRDC module imports
scikit-learn at import time; this script stubs ``sklearn.neighbors`` (PRDC is not used).
Without ``--d3rlpy``, only the plain-torch figures are printed.
"""

from __future__ import annotations

import argparse
import contextlib
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
    """Our update alone: steps/s."""
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


def ours_loop(name: str, ds, steps: int, overrides: dict) -> float:
    """Our whole training loop (fit, as the CLI runs it): steps/s."""
    from edgewarden.training.fit import fit

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        fit(name, ds, steps, Path(tmp) / "run", seed=0, overrides=overrides, progress=False, log_every=0, force=True,
            allow_degenerate_actions=True)
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

    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        import d3rlpy
    return d3rlpy


def d3rlpy_factory():
    d3rlpy = d3rlpy_module()

    def build(name: str, ds, hidden: tuple[int, ...]):  # noqa: ANN202 (d3rlpy's types)
        lo = np.asarray(ds.meta.action_low, np.float32)
        hi = np.asarray(ds.meta.action_high, np.float32)
        with contextlib.redirect_stdout(sys.stderr):  # its "signatures determined" lines
            data = d3rlpy.dataset.MDPDataset(
                observations=ds.observations, actions=ds.actions, rewards=ds.rewards,
                terminals=ds.terminals.astype(np.float32), timeouts=ds.timeouts.astype(np.float32),
                action_space=d3rlpy.constants.ActionSpace.CONTINUOUS)
            enc = d3rlpy.models.VectorEncoderFactory(hidden_units=list(hidden))
            common = dict(batch_size=256, observation_scaler=d3rlpy.preprocessing.StandardObservationScaler(),
                          action_scaler=d3rlpy.preprocessing.MinMaxActionScaler(minimum=lo, maximum=hi),
                          actor_encoder_factory=enc, critic_encoder_factory=enc)
            # fit the observation scaler as fit() would, before the networks are built
            common["observation_scaler"].fit_with_transition_picker(data.episodes, data.transition_picker)
            cfg = (d3rlpy.algos.TD3PlusBCConfig(**common) if name == "td3bc"
                   else d3rlpy.algos.IQLConfig(value_encoder_factory=enc, **common))
            d3rlpy.seed(0)
            algo = cfg.create(device="cpu:0")
            algo.build_with_dataset(data)
        return algo, data

    def update(name: str, ds, steps: int, hidden: tuple[int, ...]) -> float:
        algo, data = build(name, ds, hidden)
        for _ in range(20):
            algo.update(data.sample_transition_batch(256))
        t = time.perf_counter()
        for _ in range(steps):
            algo.update(data.sample_transition_batch(256))
        return steps / (time.perf_counter() - t)

    def loop(name: str, ds, steps: int, hidden: tuple[int, ...]) -> float:
        t = time.perf_counter()
        algo, data = build(name, ds, hidden)
        with contextlib.redirect_stdout(sys.stderr):
            algo.fit(data, n_steps=steps, n_steps_per_epoch=steps, logger_adapter=d3rlpy.logging.NoopAdapterFactory(),
                     show_progress=False, save_interval=10**9)
        return steps / (time.perf_counter() - t)

    return update, loop, d3rlpy.__version__


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300, help="updates per round (update measure)")
    ap.add_argument("--loop-steps", type=int, default=1000, help="steps per fit (loop measure)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hidden", nargs="+", default=["64,64", "256,256"], help="network widths to measure")
    ap.add_argument("--d3rlpy", action="store_true", help="compare with d3rlpy (importable: see above)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--dataset-steps", type=int, default=50_000, help="transitions in the dataset")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cstr_medium.h5"
        c = collect("cstr", "medium", args.dataset_steps, path, seed=0, n_envs=8, progress=False)
        ds = load(path)
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {machine()}; "
          f"x{torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print(f"collection: {c.transitions_per_s:,.0f} transitions/s (cstr, medium, 8 vectorised envs, "
          f"{args.dataset_steps:,})")
    d3 = None
    if args.d3rlpy:
        *d3, ver = d3rlpy_factory()
        print(f"d3rlpy {ver}")
    for widths in args.hidden:
        hidden = tuple(int(w) for w in widths.split(","))
        h = {"hidden": hidden}
        variants = [("td3bc", "td3bc", h), ("iql", "iql", h), ("iql sequential", "iql", {**h, "concurrent": False})]
        for measure in ("update", "loop"):
            for name in ("td3bc", "iql"):
                mine = [v for v in variants if v[1] == name]
                a: dict[str, list[float]] = {label: [] for label, _, _ in mine}
                b: list[float] = []
                for _ in range(args.rounds):
                    for label, _, ov in mine:
                        a[label].append(ours(name, ds, args.steps, ov) if measure == "update"
                                        else ours_loop(name, ds, args.loop_steps, ov))
                    if d3 is not None:
                        b.append(d3[0](name, ds, args.steps, hidden) if measure == "update"
                                 else d3[1](name, ds, args.loop_steps, hidden))
                n = args.steps if measure == "update" else args.loop_steps
                for label, _, _ in mine:
                    med = statistics.median(a[label])
                    line = f"{'-'.join(map(str, hidden))} {measure} {label}: edgewarden {med:.0f} steps/s"
                    if b:
                        line += f", d3rlpy {statistics.median(b):.0f} steps/s, ratio {med / statistics.median(b):.2f}x"
                    print(line + f"  (load {_loadavg()}; batch 256, obs {ds.meta.n_obs}, act {ds.meta.n_act}, "
                                 f"median of {args.rounds} rounds x {n} steps)", flush=True)


if __name__ == "__main__":
    main()
