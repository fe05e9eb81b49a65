"""Run scenarios one after another and write the report: what ``edgewarden hil run`` does."""

from __future__ import annotations

import asyncio
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgewarden.hil.invariants import Verdict, evaluate, scenario_passed
from edgewarden.hil.runner import RunData, run_scenario
from edgewarden.hil.scenario import Scenario, load_scenario


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def run_one(sc: Scenario, out: Path, *, quiet: bool = False,
            plots: bool = True) -> tuple[dict[str, Any], list[Path], RunData, list[Verdict]]:
    from edgewarden.hil.report import plot_scenario, scenario_summary

    run_dir = out / _slug(sc.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    if sc.skip:
        data = RunData(sc, run_dir)
        if not quiet:
            print(f"{sc.name}: SKIPPED ({sc.skip})", flush=True)
        return scenario_summary(data, [], True), [], data, []
    if not quiet:
        print(f"{sc.name}: {sc.description or sc.path.name} ({sc.duration_s:g} s)", flush=True)
    data = asyncio.run(run_scenario(sc, run_dir, quiet=quiet))
    if len(data.times):
        np.savez_compressed(run_dir / "recording.npz", t=data.times, t0=np.array(data.t0),
                            **{f"tag_{k}": v for k, v in data.columns.items()})
    verdicts = evaluate(data)
    passed = scenario_passed(data, verdicts)
    pngs = plot_scenario(data, verdicts, run_dir) if plots else []
    summary = scenario_summary(data, verdicts, passed)
    if not quiet:
        for v in verdicts:
            mark = "PASS" if v.passed else "FAIL"
            note = " (expected to fail)" if v.name in sc.expect_fail else ""
            print(f"    {mark} {v.name}{note}: {v.detail}", flush=True)
        print(f"{sc.name}: {summary['result'].upper()} in {data.wall_s:.1f} s", flush=True)
    return summary, pngs, data, verdicts


def run_bench(paths: list[Path], report: Path | None = None, *, quiet: bool = False) -> tuple[int, Path]:
    """Load every scenario first (a bad file fails before anything starts), run, report."""
    from edgewarden.hil.report import write_report

    scenarios = [load_scenario(p) for p in paths]
    out = Path(report) if report is not None else Path(tempfile.mkdtemp(prefix="edgewarden-hil-"))
    out.mkdir(parents=True, exist_ok=True)
    results = []
    t0 = time.monotonic()
    for sc in scenarios:
        summary, pngs, _, _ = run_one(sc, out, quiet=quiet)
        results.append((summary, pngs))
    html = write_report(out, results)
    failed = [s["name"] for s, _ in results if s["result"] == "fail"]
    if not quiet:
        counts = {k: sum(1 for s, _ in results if s["result"] == k) for k in ("pass", "fail", "skipped")}
        print(f"\n{counts['pass']} passed, {counts['fail']} failed, {counts['skipped']} skipped "
              f"in {time.monotonic() - t0:.0f} s; report: {html}", flush=True)
        if failed:
            print(f"failed: {', '.join(failed)}", flush=True)
    return (1 if failed else 0), html
