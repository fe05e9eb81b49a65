"""The scrape benchmark's short version (benchmarks/bench_scrape.py): both phases run and
give sane figures; no timed assertions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_short_run_prints_both_phases_and_writes_sane_json(tmp_path: Path) -> None:
    out = tmp_path / "scrape.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_scrape.py"), "--seconds", "2",
                           "--warmup", "0.5", "--loops", "4", "--slowloris", "8", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| quiet |" in proc.stdout and "| loaded |" in proc.stdout
    data = json.loads(out.read_text())
    for phase in ("quiet", "loaded"):
        r = data[phase]
        assert r["cycles"] > 0 and r["misses"] >= 0 and r["scrapes"] > 0
        assert r["scrape_ms_median"] <= r["scrape_ms_max"]
    assert data["loaded"]["hostile_scrapes"] > 0
