"""Reproduce the results table of docs/training.md: ``python -m training.results OUTDIR [QUALITIES [PLANTS]]``.

Runs the real CLI (``edgewarden train collect|fit|evaluate``) for every plant x dataset
quality x algorithm x seed with the budgets below, then prints a Markdown table of the
normalised score and violation rate, mean (and spread) over seeds. The commands it runs
are printed as it goes, so each cell can be rerun by hand.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

PLANTS = ("cstr",)
QUALITIES = ("medium", "expert", "random")
ALGOS = ("bc", "td3bc", "iql", "cql")
SEEDS = (0, 1, 2)
DATASET_STEPS = 20_000
FIT_STEPS = {"bc": 1000, "td3bc": 1000, "iql": 1000, "cql": 150}
EVAL_EPISODES = 5


def run(cmd: list[str]) -> str:
    print("$ " + " ".join(shlex.quote(c) for c in cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def main(out: Path, qualities: tuple[str, ...] = QUALITIES, plants: tuple[str, ...] = PLANTS) -> None:
    ew = str(Path(sys.executable).with_name("edgewarden"))
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for plant in plants:
        for q in qualities:
            ds = out / f"{plant}_{q}.h5"
            if not ds.exists():
                run([ew, "train", "collect", plant, "--policy", q, "--steps", str(DATASET_STEPS), "--out", str(ds)])
            beh = json.loads(run([ew, "train", "evaluate", q, "--plant", plant, "--episodes", str(EVAL_EPISODES), "--json"]))
            rows.append((plant, q, f"behaviour ({q})", [beh["normalized_score"]], [beh["violation_rate"]]))
            for algo in ALGOS:
                scores, viols = [], []
                for seed in SEEDS:
                    rd = out / f"{plant}_{q}_{algo}_s{seed}"
                    if not (rd / "last.pt").exists():  # rerunning only evaluates finished runs
                        run([ew, "train", "fit", "--algo", algo, "--dataset", str(ds), "--steps", str(FIT_STEPS[algo]),
                             "--seed", str(seed), "--out", str(rd), "--log-every", "500", "--no-progress"])
                    r = json.loads(run([ew, "train", "evaluate", str(rd), "--episodes", str(EVAL_EPISODES), "--json"]))
                    scores.append(r["normalized_score"])
                    viols.append(r["violation_rate"])
                rows.append((plant, q, algo, scores, viols))
                print(f"{plant} {q} {algo}: {np.mean(scores):.1f} ± {np.std(scores):.1f}, viol {np.mean(viols):.4f}",
                      file=sys.stderr, flush=True)
    lines = ["| plant | dataset | policy | normalised score (mean ± std over seeds) | violation rate |",
             "|---|---|---|---|---|"]
    for plant, q, who, s, v in rows:
        lines.append(f"| {plant} | {q} | {who} | {np.mean(s):.1f} ± {np.std(s):.1f} | {np.mean(v):.4f} |")
    table = "\n".join(lines)
    (out / "results.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "results"),
         tuple(sys.argv[2].split(",")) if len(sys.argv) > 2 else QUALITIES,
         tuple(sys.argv[3].split(",")) if len(sys.argv) > 3 else PLANTS)
