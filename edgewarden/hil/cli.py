"""``edgewarden hil run SCENARIO... [--report DIR]``: the hardware-in-the-loop bench."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    hil = subparsers.add_parser("hil", help="hardware-in-the-loop bench: scenarios against twins or a PLC")
    sub = hil.add_subparsers(dest="hil_command", metavar="COMMAND", required=True)
    run = sub.add_parser("run", help="run scenario files, check their invariants, write a report")
    run.add_argument("scenarios", nargs="+", type=Path, metavar="SCENARIO",
                     help="scenario TOML files (see docs/hil.md; library: edgewarden/hil/scenarios/)")
    run.add_argument("--report", type=Path, default=None, metavar="DIR",
                     help="report directory (index.html, summary.json, plots); default: a temp dir")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    run.set_defaults(handler=_run)
    check = sub.add_parser("check", help="load scenario files and report every problem, run nothing")
    check.add_argument("scenarios", nargs="+", type=Path, metavar="SCENARIO")
    check.set_defaults(handler=_check)


def _run(args: argparse.Namespace) -> int:
    from edgewarden.hil.bench import run_bench

    code, _ = run_bench(list(args.scenarios), args.report, quiet=args.quiet)
    return code


def _check(args: argparse.Namespace) -> int:
    from edgewarden.hil.scenario import load_scenario

    for p in args.scenarios:
        sc = load_scenario(p)
        note = f" (skipped: {sc.skip})" if sc.skip else ""
        print(f"{p}: {sc.name}, {len(sc.events)} events, {sc.duration_s:g} s{note}")
    return 0
