"""Reproduce the results table of docs/training.md.

    python -m edgewarden.training.results OUTDIR [--plants cstr,tanks,hvac] [--qualities medium,expert,random,mixed]
                                      [--algos bc,td3bc,iql,cql] [--seeds 0,1,2] [--table-only]

For every plant x dataset quality x algorithm x seed: collect the dataset (once per
plant and quality), fit, evaluate on the twin; plus the behaviour policy of each
dataset on the same evaluation episodes. Each cell runs in this process through the
same functions the CLI calls, and the equivalent ``edgewarden train ...`` command is
printed as it goes (so any cell can be rerun by hand and gives the same numbers: fit is
deterministic under its seed on CPU, evaluation episodes are seeded). A cell's result
is kept in ``OUTDIR/cells/*.json``: rerunning skips finished cells, and
``--table-only`` prints the table of whatever has finished.

Budgets (:data:`BUDGET`) are sized for a 2-core machine shared with others: they are
far below the papers' 10^5-10^6 steps and use 64-64 networks instead of 256-256.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

PLANTS = ("cstr", "tanks", "hvac")
QUALITIES = ("medium", "expert", "random", "mixed")
ALGOS = ("bc", "td3bc", "iql", "cql")
# Cells of one algorithm with other settings (--algos iql-det): name -> (algorithm, --set)
VARIANTS: dict[str, tuple[str, dict]] = {
    "iql-det": ("iql", {"actor": "deterministic"}),  # IQL before 2026-12-04
    "iql-cf": ("iql", {"order": "critic_first"}),  # d3rlpy's order within a step
}
SEEDS = (0, 1, 2)
DATASET_STEPS = 50_000  # transitions per dataset, collection seed 0
HIDDEN = (64, 64)  # every network of every algorithm
FIT_STEPS = {"bc": 5000, "td3bc": 5000, "iql": 5000, "cql": 1000}  # gradient steps, batch 256
# Cells other programs write into OUTDIR/cells (benchmarks/d3rlpy_cells.py); the table shows them
FOREIGN = ("d3rlpy-iql",)
EVAL_EPISODES = 10  # evaluation episodes, env seeds 1000..1009
BUDGET = (f"datasets of {DATASET_STEPS:,} transitions (collection seed 0); networks {HIDDEN[0]}-{HIDDEN[1]}; "
          + ", ".join(f"{a} {n:,}" for a, n in FIT_STEPS.items()) + " gradient steps at batch 256; "
          f"{EVAL_EPISODES} evaluation episodes (seeds 1000-{1000 + EVAL_EPISODES - 1})")


def _say(cmd: list[str]) -> None:
    print("$ " + " ".join(shlex.quote(str(c)) for c in cmd), file=sys.stderr, flush=True)


def _cell(path: Path, make) -> dict:
    if path.exists():
        return json.loads(path.read_text())
    r = make()
    path.write_text(json.dumps(r) + "\n")
    return r


def run(out: Path, plants: tuple[str, ...], qualities: tuple[str, ...], algos: tuple[str, ...],
        seeds: tuple[int, ...]) -> None:
    import torch

    from edgewarden.training.collect import collect
    from edgewarden.training.datasets import load
    from edgewarden.training.evaluate import evaluate_policy
    from edgewarden.training.fit import fit, load_checkpoint, policy_fn

    torch.set_num_threads(1)
    cells = out / "cells"
    cells.mkdir(parents=True, exist_ok=True)
    for plant in plants:
        for q in qualities:
            ds_path = out / f"{plant}_{q}.h5"
            if not ds_path.exists():
                _say(["edgewarden", "train", "collect", plant, "--policy", q, "--steps", DATASET_STEPS, "--out", ds_path])
                collect(plant, q, DATASET_STEPS, ds_path, seed=0, progress=False)

            def behaviour(plant: str = plant, q: str = q) -> dict:
                _say(["edgewarden", "train", "evaluate", q, "--plant", plant, "--episodes", EVAL_EPISODES, "--json"])
                return evaluate_policy(plant, q, episodes=EVAL_EPISODES).to_dict()

            _cell(cells / f"{plant}_{q}_behaviour.json", behaviour)
            ds = None
            for algo in algos:
                for seed in seeds:
                    rd = out / f"{plant}_{q}_{algo}_s{seed}"

                    def train(algo: str = algo, seed: int = seed, rd: Path = rd) -> dict:
                        nonlocal ds
                        ds = ds or load(ds_path)
                        name, extra = VARIANTS.get(algo, (algo, {}))
                        sets = [a for k, v in extra.items() for a in ("--set", f"{k}={json.dumps(v)}")]
                        _say(["edgewarden", "train", "fit", "--algo", name, "--dataset", ds_path, "--steps",
                              FIT_STEPS[name], "--seed", seed, "--set", f"hidden=[{HIDDEN[0]},{HIDDEN[1]}]", *sets,
                              "--out", rd, "--log-every", 1000, "--no-progress", "--force",
                              "--allow-degenerate-actions"])
                        t = time.perf_counter()
                        # every cell is measured, the degenerate ones too (docs/training.md)
                        fit(name, ds, FIT_STEPS[name], rd, seed=seed, overrides={"hidden": HIDDEN, **extra},
                            log_every=1000, progress=False, force=True, allow_degenerate_actions=True)
                        secs = time.perf_counter() - t
                        _say(["edgewarden", "train", "evaluate", rd, "--episodes", EVAL_EPISODES, "--json"])
                        a, ck = load_checkpoint(rd)
                        r = evaluate_policy(plant, policy_fn(a, ds.meta), episodes=EVAL_EPISODES).to_dict()
                        return {**r, "fit_seconds": secs}

                    r = _cell(cells / f"{plant}_{q}_{algo}_s{seed}.json", train)
                    print(f"{plant} {q} {algo} s{seed}: score {r['normalized_score']:.1f}, violations "
                          f"{r['violation_rate']:.4f}, fit {r['fit_seconds']:.0f} s", file=sys.stderr, flush=True)


def table(out: Path, plants: tuple[str, ...], qualities: tuple[str, ...], algos: tuple[str, ...],
          seeds: tuple[int, ...]) -> str:
    lines = ["| plant | dataset | policy | normalised score | violation rate | seeds |", "|---|---|---|---|---|---|"]
    for plant in plants:
        for q in qualities:
            b = out / "cells" / f"{plant}_{q}_behaviour.json"
            if not b.exists():
                continue
            beh = json.loads(b.read_text())
            lines.append(f"| {plant} | {q} | behaviour ({q}) | {beh['normalized_score']:.1f} | "
                         f"{beh['violation_rate']:.4f} | - |")
            for algo in algos:
                rs = [json.loads(p.read_text()) for s in seeds
                      if (p := out / "cells" / f"{plant}_{q}_{algo}_s{s}.json").exists()]
                if not rs:
                    continue
                sc = np.array([r["normalized_score"] for r in rs])
                vi = np.array([r["violation_rate"] for r in rs])
                score = f"{sc.mean():.1f} ± {sc.std():.1f}"
                if sc.mean() > beh["normalized_score"]:  # bold: above the dataset's behaviour policy
                    score = f"**{score}**"
                lines.append(f"| {plant} | {q} | {algo} | {score} | {vi.mean():.4f} ± {vi.std():.4f} | {len(rs)} |")
    return "\n".join(lines)


def rank_sum_p(a: list[float], b: list[float]) -> float:
    """Two-sided exact p-value of the Mann-Whitney / Wilcoxon rank-sum test (all splits of
    the pooled scores enumerated; ties share their mean rank)."""
    from itertools import combinations

    pooled = np.asarray(a + b, float)
    order = pooled.argsort(kind="mergesort")
    ranks = np.empty(len(pooled))
    ranks[order] = np.arange(1, len(pooled) + 1)
    for v in np.unique(pooled):  # mean rank for ties
        ranks[pooled == v] = ranks[pooled == v].mean()
    n = len(a)
    expected = n * (len(pooled) + 1) / 2
    observed = abs(ranks[:n].sum() - expected)
    sums = [abs(ranks[list(c)].sum() - expected) for c in combinations(range(len(pooled)), n)]
    return float(np.mean([s >= observed - 1e-9 for s in sums]))


def compare(out: Path, plants: tuple[str, ...], qualities: tuple[str, ...], a: str, b: str,
            seeds: tuple[int, ...]) -> str:
    """Per cell where both have two or more seeds: their seeds, means, medians and the rank-sum p."""
    lines = [f"| plant | dataset | seeds | {a} mean / median | {b} mean / median | rank-sum p |", "|---|---|---|---|---|---|"]
    for plant in plants:
        for q in qualities:
            sa, sb = ([json.loads(p.read_text())["normalized_score"] for s in seeds
                       if (p := out / "cells" / f"{plant}_{q}_{x}_s{s}.json").exists()] for x in (a, b))
            if len(sa) < 2 or len(sb) < 2:
                continue
            lines.append(f"| {plant} | {q} | {len(sa)} / {len(sb)} | {np.mean(sa):.1f} / {np.median(sa):.1f} | "
                         f"{np.mean(sb):.1f} / {np.median(sb):.1f} | {rank_sum_p(sa, sb):.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m edgewarden.training.results", description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    csv = lambda s: tuple(s.split(","))  # noqa: E731
    ap.add_argument("--plants", type=csv, default=PLANTS)
    ap.add_argument("--qualities", type=csv, default=QUALITIES)
    ap.add_argument("--algos", type=csv, default=ALGOS)
    ap.add_argument("--seeds", type=lambda s: tuple(int(x) for x in s.split(",")), default=SEEDS)
    ap.add_argument("--table-only", action="store_true", help="print the table of the finished cells")
    ap.add_argument("--compare", type=csv, metavar="A,B", help="with --table-only: A against B per cell (means, "
                    "medians, exact rank-sum p) instead of the table")
    a = ap.parse_args(argv)
    if a.compare:
        if len(a.compare) != 2 or not a.table_only:
            ap.error("--compare takes two policies, A,B, with --table-only")
        print(compare(a.out, a.plants, a.qualities, *a.compare, a.seeds))
        return
    unknown = [x for x in a.algos if x not in ALGOS and x not in VARIANTS and x not in FOREIGN]
    if unknown:
        ap.error(f"unknown --algos {', '.join(unknown)} (known: {', '.join((*ALGOS, *VARIANTS, *FOREIGN))})")
    if not a.table_only:
        print(f"budget: {BUDGET}", file=sys.stderr, flush=True)
        run(a.out, a.plants, a.qualities, tuple(x for x in a.algos if x not in FOREIGN), a.seeds)
    t = table(a.out, a.plants, a.qualities, a.algos, a.seeds)
    (a.out / "results.md").write_text(t + "\n")
    print(t)


if __name__ == "__main__":
    main()
