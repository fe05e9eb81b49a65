"""benchmarks/bench_train.py runs both measures for every width asked, and prints only results
on stdout (one header, the collection line, one line per width, measure and variant)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_train_prints_each_cell_and_nothing_else() -> None:
    p = subprocess.run([sys.executable, "benchmarks/bench_train.py", "--steps", "3", "--loop-steps", "3", "--rounds", "1",
                        "--hidden", "8,8", "16,16", "--dataset-steps", "2000", "--threads", "1"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("# ") and lines[1].startswith("collection: ")
    cells = [ln.split(":")[0] for ln in lines[2:]]
    assert cells == [f"{w} {m} {v}" for w in ("8-8", "16-16") for m in ("update", "loop")
                     for v in ("td3bc", "iql", "iql sequential")], lines
    assert all(" steps/s" in ln for ln in lines[2:])
