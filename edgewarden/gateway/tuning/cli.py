"""``edgewarden tune LOG --pv TAG --action TAG --setpoint SP``: PI settings for one loop
from the last step test in the audit log (an ``excite start --signal steps`` run), by a
first-order-plus-dead-time fit and the SIMC rules (edgewarden/gateway/tuning/fopdt.py).
Reads the log only; prints a ``[policy.pid.ACTION]`` table to paste into the config."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from edgewarden.gateway.errors import AuditError, GatewayError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="PI settings for a loop from a step test in the audit log (FOPDT fit, SIMC)")
    p.add_argument("log", type=Path, help="audit log directory")
    p.add_argument("--pv", required=True, help="the measured tag (an observation)")
    p.add_argument("--action", required=True, help="the action the step test moved")
    p.add_argument("--setpoint", required=True, help="the loop's setpoint: a tag or a number (goes into the table)")
    p.add_argument("--since", help="only cycles from this time (Unix seconds or ISO-8601)")
    p.add_argument("--until", help="only cycles before this time")
    p.add_argument("--tau-c", type=float, default=None, metavar="S",
                   help="closed-loop time constant (default: the dead time, at least a fifth of the time constant)")
    p.add_argument("--max-dead", type=float, default=30.0, metavar="S", help="longest dead time tried (default 30)")
    p.add_argument("--json", action="store_true", help="print the model and settings as one JSON object")
    p.set_defaults(handler=_tune)


def _numbers(values: Any, n: int) -> bool:
    return isinstance(values, list) and len(values) == n and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def step_test(directory: Path, pv: str, action: str, since: float | None = None,
              until: float | None = None) -> tuple[np.ndarray, np.ndarray, float, dict[str, Any]]:
    """(PV, action written, sample time, what the window is) of the last step test of
    ``action`` in the log (``excite --signal steps``): its run of consecutive cycles."""
    from edgewarden.gateway.audit.jsonl import in_window
    from edgewarden.gateway.audit.verify import iter_records

    if not directory.is_dir():
        raise AuditError(f"{directory}: not a directory")
    obs_tags: list[str] = []
    act_tags: list[str] = []
    test: tuple[str, frozenset[str], float] | None = None  # the excitation running: signal, actions, end
    runs: list[list[dict[str, Any]]] = []
    signals: set[str] = set()  # the signals this action was excited with in the range
    for rec in iter_records(directory):
        p = rec.payload
        kind = p.get("kind")
        if kind == "config_load" and isinstance(p.get("obs_tags"), list) and isinstance(p.get("act_tags"), list):
            obs_tags, act_tags = [str(t) for t in p["obs_tags"]], [str(t) for t in p["act_tags"]]
        elif kind == "excitation":
            amplitude, start, duration = p.get("amplitude"), p.get("t_mono"), p.get("duration_s")
            started = p.get("change") == "start" and isinstance(amplitude, dict)
            end = float(start) + float(duration) if _numbers([start, duration], 2) else math.inf
            test = (str(p.get("signal")), frozenset(amplitude), end) if started else None
        if kind != "cycle" or not in_window(p, since, until) or test is None or action not in test[1]:
            continue
        signals.add(test[0])
        usable = (test[0] == "steps" and isinstance(p.get("excite"), list) and isinstance(p.get("n"), int)
                  and _numbers(p.get("obs"), len(obs_tags)) and _numbers(p.get("written"), len(act_tags))
                  and _numbers([p.get("t_mono")], 1) and p["t_mono"] <= test[2])  # not the ramp back after it
        if not usable:
            continue
        row = {"n": p["n"], "t": float(p["t_mono"]), "obs": p["obs"], "written": p["written"],
               "tags": (tuple(obs_tags), tuple(act_tags))}
        if runs and runs[-1][-1]["n"] + 1 == p["n"] and runs[-1][-1]["tags"] == row["tags"]:
            runs[-1].append(row)
        else:
            runs.append([row])
    if not runs:
        closed = " (a prbs is closed loop: the controller's answer would be fitted, not the process)" if signals else ""
        raise GatewayError(f"{directory}: no step test of {action} in that range{closed}: run edgewarden excite start "
                         f"--signal steps --amplitude {action}=VALUE first")
    run = runs[-1]
    obs_names, act_names = run[0]["tags"]
    if pv not in obs_names:
        raise GatewayError(f"--pv {pv}: not an observation of this log (observations: {', '.join(obs_names)})")
    i, j = obs_names.index(pv), act_names.index(action)
    y = np.array([r["obs"][i] for r in run], np.float64)
    u = np.array([r["written"][j] for r in run], np.float64)
    t = np.array([r["t"] for r in run])
    dt = float(np.median(np.diff(t))) if len(t) > 1 else float("nan")
    return y, u, dt, {"cycles": len(run), "first_n": run[0]["n"], "last_n": run[-1]["n"],
                      "seconds": round(float(t[-1] - t[0]), 3)}


def _tune(args: argparse.Namespace) -> int:
    from edgewarden.gateway.audit.jsonl import parse_time
    from edgewarden.gateway.tuning.fopdt import TuningError, fit_fopdt, simc

    since = parse_time(args.since) if args.since else None
    until = parse_time(args.until) if args.until else None
    y, u, dt, window = step_test(args.log, args.pv, args.action, since, until)
    try:
        model = fit_fopdt(y, u, dt, args.max_dead)
        pi = simc(model, args.tau_c)
    except TuningError as e:
        raise GatewayError(f"tune {args.pv} by {args.action}: {e}") from None
    try:
        setpoint: str = repr(float(args.setpoint))
    except ValueError:
        setpoint = json.dumps(args.setpoint)
    if args.json:
        print(json.dumps({"window": window, "model": model.to_dict(), "pi": pi.to_dict()}))
        return 0
    print(f"step test: cycles {window['first_n']}..{window['last_n']} ({window['seconds']:g} s, every {dt:.3g} s)")
    print(f"model: {args.pv} answers {args.action} with gain {model.gain:.4g} per unit, time constant "
          f"{model.tau_s:.3g} s, dead time {model.dead_s:.3g} s (fit {model.fit:.2f} of the PV's variance)")
    if model.fit < 0.8:
        print("warning: the model explains less than 80 % of the PV's movement: a longer or larger step test, "
              "or a calmer plant, gives settings worth more")
    print(f"SIMC PI, closed-loop time constant {pi.tau_c_s:.3g} s, integral time {pi.tau_i_s:.3g} s:\n")
    print(f"[policy.pid.{args.action}]\npv = {json.dumps(args.pv)}\nsetpoint = {setpoint}\n"
          f"kp = {pi.kp:.6g}\nki = {pi.ki:.6g}")
    return 0
