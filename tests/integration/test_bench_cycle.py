"""The cycle benchmark's short version: real daemon, load twin, bare client, table and JSON.

No timed assertions: the numbers must exist and be sane (finite, positive, in order),
not fast.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_short_matrix_prints_the_table_and_writes_sane_json(tmp_path: Path) -> None:
    out = tmp_path / "cycle.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_cycle.py"), "--cells",
         "opcua-poll:8:50,modbus:16x2:100", "--seconds", "2", "--warmup", "1", "--bare-seconds", "1",
         "--estop-trips", "2", "--twin-cpu", "-1", "--daemon-cpu", "-1", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "per-stage budget" in proc.stdout and "opcua-poll:8:50" in proc.stdout
    data = json.loads(out.read_text())
    assert [r["cell"] for r in data["results"]] == ["opcua-poll:8:50", "modbus:16x2:100"]
    for res in data["results"]:
        g = res["gateway"]
        assert g["cycles"] > 0 and g["rate_hz"] > 0 and g["misses"] >= 0 and g["daemon_cpu"] > 0
        late = g["lateness"]
        assert late["median"] <= late["p99"] <= late["p999"] <= late["max"]
        for stage in ("read", "check", "infer", "shield", "write", "audit", "metrics"):
            s = g["stages"][stage]
            assert s["n"] > 0 and 0 < s["median"] <= s["max"], (res["cell"], stage, s)
        assert len(g["estop_us"]) == 2 and all(x > 0 for x in g["estop_us"])
        for stage in ("read", "write", "infer"):
            b = res["bare"][stage]
            assert b["n"] > 0 and math.isfinite(b["median"]) and b["median"] > 0


def test_interleaved_overhead_run_compares_both_sides_in_one_process() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_cycle_interleave.py"), "--cells", "modbus:8x2:100,opcua-poll:8:100",
         "--interleave", "2", "--interleave-pairs", "30", "--twin-cpu", "-1", "--daemon-cpu", "-1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for cell in ("modbus:8x2:100", "opcua-poll:8:100"):
        line = next(x for x in proc.stdout.splitlines() if x.startswith(cell))
        ratios = [float(part.split("=")[1].strip().rstrip("x,")) for part in line.split(", ") if "=" in part]
        assert len(ratios) == 2 and all(0 < r < 100 for r in ratios), line
    assert proc.stdout.count("by phase of the twin's scan") == 2
