"""The bench report: ``summary.json``, PNG plots and one self-contained ``index.html``.

Per scenario: the tag trajectories at the PLC side (policy inputs, action setpoints and
what the PLC applies) in their units, with the configured limits as lines (hard red,
soft orange, action bounds grey), the gateway's modes as coloured bands and the
timeline's events as numbered vertical lines (the numbers key the events table); a
histogram of the cycle period as audited; the measured reaction times against their
budgets. The header says what ran where: edgewarden's version and commit, each model's
hash, the host and the date. The HTML embeds the PNGs (data URIs), so the one file can
be mailed or attached to a ticket. Needs matplotlib (the ``hil`` extra).
"""

from __future__ import annotations

import base64
import html
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgewarden.gateway.errors import ConfigError
from edgewarden.hil.invariants import Verdict, mode_intervals
from edgewarden.hil.runner import RunData

MODE_COLOURS = {"INHIBITED": "#dddddd", "READY": "#cfe3ff", "AUTO": "#d6f5d6", "FALLBACK": "#fff2b3",
                "MANUAL": "#e8d6ff", "ESTOP": "#ffc9c9"}


def _plt() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("the HIL report needs matplotlib: pip install 'edgewarden[hil]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def scenario_summary(data: RunData, verdicts: list[Verdict], passed: bool) -> dict[str, Any]:
    sc = data.scenario
    return {
        "name": sc.name, "file": str(sc.path), "description": sc.description,
        "result": "skipped" if sc.skip else ("pass" if passed else "fail"),
        "skip_reason": sc.skip, "expect_fail": sc.expect_fail,
        "duration_s": sc.duration_s, "wall_s": round(data.wall_s, 2), "error": data.error,
        "gateway_exit": data.gateway_exit, "audit_records": len(data.audit),
        "models": sorted({r["sha256"] for r in data.audit if r.get("kind") == "model_load" and "sha256" in r}),
        "invariants": [v.to_json() for v in verdicts],
        "events": [{"at": e.event.at, "t": round(e.t - data.t0, 3), "kind": e.event.kind,
                    "label": e.event.label(), "ok": e.ok} for e in data.events],
    }


def plot_scenario(data: RunData, verdicts: list[Verdict], out: Path) -> list[Path]:
    plt = _plt()
    from matplotlib.ticker import FormatStrFormatter
    plan = data.plan
    if plan is None or not len(data.times):
        return []
    t = data.times - data.t0
    files: list[Path] = []
    doc = _config(plan)
    tags, limits = doc.get("tags", {}), doc.get("safety", {}).get("limits", {})
    # (title, columns, units, [(value, colour, style)])
    panels: list[tuple[str, list[str], str, list[tuple[float, str, str]]]] = []
    for name in doc["policy"]["observations"]:
        col = plan.plc_tags.get(name, name)
        if col in data.columns:
            lim = limits.get(name, {})
            lines = [(v, "#cc3333", "--") for v in lim.get("hard", [])] + [(v, "#ee8800", ":") for v in lim.get("soft", [])]
            panels.append((name, [col], tags.get(name, {}).get("units", ""), lines))
    for a in plan.actions:
        panels.append((a.name, [c for c in (a.plc_tag, a.applied_tag) if c in data.columns],
                       tags.get(a.name, {}).get("units", ""), [(a.lo, "#888888", "-."), (a.hi, "#888888", "-.")]))
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 2.3 * len(panels) + 0.6), sharex=True)
    axes = np.atleast_1d(axes)
    bands = mode_intervals(data)
    if bands:  # the gateway starts INHIBITED; the first mode record is its way out
        bands.insert(0, (float(data.times[0]), bands[0][0], "INHIBITED"))
    for ax, (title, cols, units, lines) in zip(axes, panels):
        for s, e, m in bands:
            ax.axvspan(s - data.t0, e - data.t0, color=MODE_COLOURS.get(m, "#eeeeee"), lw=0)
        for c in cols:
            ax.plot(t, data.columns[c], lw=1.2, label=c)
        for value, colour, style in lines:
            ax.axhline(value, color=colour, ls=style, lw=0.9)
        for ev in data.events:
            ax.axvline(ev.t - data.t0, color="#444444", ls="--", lw=0.8)
        ax.set_ylabel(f"{title} [{units}]" if units else title, fontsize=8)
        ax.legend(loc="upper right", fontsize=7)
        ax.grid(alpha=0.3)
    _number_events(axes[0], [ev.t - data.t0 for ev in data.events], float(t[-1] - t[0]) if len(t) > 1 else 1.0)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for m, c in MODE_COLOURS.items()]
    fig.legend(handles, list(MODE_COLOURS), loc="lower center", ncol=len(MODE_COLOURS), fontsize=8)
    axes[-1].set_xlabel("time since AUTO [s] (the timeline's t = 0)")
    fig.suptitle(f"{data.scenario.name}: tags at the PLC, limits (hard red, soft orange, bounds grey), "
                 "modes (bands), events (numbered, dashed)", fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    p = out / "trajectories.png"
    fig.savefig(p, dpi=90)
    plt.close(fig)
    files.append(p)

    cyc = np.array([r["t_mono"] for r in data.audit if r.get("kind") == "cycle"])
    timings = _timing_samples(verdicts)
    fig, axes = plt.subplots(1, 1 + bool(timings), figsize=(11, 3.2))
    axes = np.atleast_1d(axes)
    if len(cyc) > 2:
        axes[0].hist(np.diff(cyc) * 1000, bins=60, color="#4477aa")
        axes[0].axvline(1000 / plan.cycle_hz, color="k", ls="--", lw=0.8)
    axes[0].set_xlabel("cycle period as audited [ms]")
    axes[0].set_ylabel("cycles")
    axes[0].set_yscale("log")
    axes[0].yaxis.set_major_formatter(FormatStrFormatter("%g"))  # 1, 10, 100 cycles, not 10^0
    if timings:
        names = [n for n, _, _ in timings]
        vals = [v for _, v, _ in timings]
        budgets = [b for _, _, b in timings]
        ax = axes[1]
        colours = ["#55aa55" if v <= b else "#cc3333" for v, b in zip(vals, budgets)]
        ax.barh(range(len(vals)), vals, color=colours)
        ax.scatter(budgets, range(len(vals)), marker="|", s=400, color="k", label="budget")
        ax.set_yticks(range(len(vals)), names, fontsize=7)
        ax.set_xlabel("measured latency [ms]")
        ax.legend(fontsize=7)
    fig.tight_layout()
    p = out / "latency.png"
    fig.savefig(p, dpi=90)
    plt.close(fig)
    files.append(p)
    return files


def _config(plan: Any) -> dict[str, Any]:
    import tomllib

    return tomllib.loads(plan.config_path.read_text())


def _number_events(ax: Any, times: list[float], span: float) -> None:
    """Each event's number at the top of the plot, stepped down when two would touch."""
    last, level = -float("inf"), 0
    for i, x in enumerate(times, 1):
        level = level + 1 if x - last < span * 0.03 else 0
        last = x
        ax.annotate(str(i), (x, 0.97 - 0.16 * (level % 4)), xycoords=("data", "axes fraction"), fontsize=8,
                    ha="center", va="top", bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "#444444", "lw": 0.6})


def provenance(results: list[tuple[dict[str, Any], list[Path]]]) -> dict[str, Any]:
    """What ran, where and when: the report's header."""
    import platform
    import socket
    import subprocess

    from edgewarden.gateway.version import version

    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=5).stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        commit += " (with uncommitted changes)" if dirty and commit != "unknown" else ""
    except (OSError, subprocess.SubprocessError):
        commit = "unknown (not a git checkout)"
    models = sorted({m for s, _ in results for m in s.get("models", [])})
    return {"version": version(), "commit": commit, "models": models, "host": socket.gethostname(),
            "platform": f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
            "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _timing_samples(verdicts: list[Verdict]) -> list[tuple[str, float, float]]:
    out = []
    for v in verdicts:
        scale = 1000.0 if v.name == "reconnect" else 1.0
        for i, s in enumerate(v.samples or []):
            out.append((f"{v.name} #{i + 1}", s * scale, (v.budget or 0.0) * scale))
    return out


def _img(path: Path) -> str:
    b64 = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{b64}">'


def write_report(out: Path, results: list[tuple[dict[str, Any], list[Path]]]) -> Path:
    """Write summary.json and index.html for all scenarios; returns the HTML path."""
    summaries = [s for s, _ in results]
    overall = "fail" if any(s["result"] == "fail" for s in summaries) else "pass"
    prov = provenance(results)
    doc = {"generated": prov["generated"], "result": overall, "provenance": prov, "scenarios": summaries}
    (out / "summary.json").write_text(json.dumps(doc, indent=2, default=str))
    e = html.escape
    rows = "".join(
        f'<tr class="{s["result"]}"><td><a href="#{e(s["name"])}">{e(s["name"])}</a></td>'
        f'<td>{s["result"].upper()}</td><td>{e(s["description"])}</td>'
        f'<td>{sum(1 for v in s["invariants"] if v["passed"])}/{len(s["invariants"])}</td></tr>'
        for s in summaries)
    parts = [f"""<!doctype html><html><head><meta charset="utf-8">
<title>edgewarden HIL report: {overall.upper()}</title><style>
body{{font-family:system-ui,sans-serif;margin:1.5em;max-width:1150px;color:#222}}
table{{border-collapse:collapse;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}}
tr.pass td:nth-child(2),td.pass{{background:#d6f5d6;font-weight:bold}}
tr.fail td:nth-child(2),td.fail{{background:#ffc9c9;font-weight:bold}}
tr.skipped td:nth-child(2){{background:#eee}}
.banner{{font-size:22px;padding:8px 14px;display:inline-block;border-radius:4px}}
.banner.pass{{background:#d6f5d6}}.banner.fail{{background:#ffc9c9}}
img{{max-width:100%;border:1px solid #ddd;margin:4px 0}}h2{{margin-top:1.6em;border-bottom:1px solid #ccc}}
</style></head><body>
<h1>edgewarden hardware-in-the-loop report</h1>
<div class="banner {overall}">{overall.upper()}</div> <span>generated {doc['generated']}</span>
<table class="prov"><tr><th>edgewarden</th><td>{e(prov["version"])}, commit {e(prov["commit"])}</td></tr>
<tr><th>models (SHA-256)</th><td>{"<br>".join(e(m) for m in prov["models"]) or "none loaded"}</td></tr>
<tr><th>host</th><td>{e(prov["host"])} ({e(prov["platform"])})</td></tr></table>
<table><tr><th>scenario</th><th>result</th><th>what</th><th>invariants passed</th></tr>{rows}</table>"""]
    for s, pngs in results:
        parts.append(f'<h2 id="{e(s["name"])}">{e(s["name"])}: {s["result"].upper()}</h2>'
                     f'<p>{e(s["description"])}<br><small>{e(s["file"])} · wall {s["wall_s"]} s · '
                     f'audit records {s["audit_records"]} · gateway exit {s["gateway_exit"]}</small></p>')
        if s["skip_reason"]:
            parts.append(f"<p><b>skipped:</b> {e(s['skip_reason'])}</p>")
            continue
        if s["error"]:
            parts.append(f"<p><b>run error:</b> {e(s['error'])}</p>")
        inv = "".join(
            f'<tr><td>{e(v["name"])}{" (expected to fail)" if v["name"] in s["expect_fail"] else ""}</td>'
            f'<td class="{"pass" if v["passed"] else "fail"}">{"PASS" if v["passed"] else "FAIL"}</td>'
            f'<td>{e(v["detail"])}</td></tr>' for v in s["invariants"])
        parts.append(f"<table><tr><th>invariant</th><th>verdict</th><th>evidence</th></tr>{inv}</table>")
        evs = "".join(f'<tr><td>{i}</td><td>{ev["t"]:.2f}</td><td>{e(ev["label"])}</td>'
                      f'<td class="{"pass" if ev["ok"] else "fail"}">{"ok" if ev["ok"] else "failed"}</td></tr>'
                      for i, ev in enumerate(s["events"], 1))
        if evs:
            parts.append(f"<table><tr><th>#</th><th>t [s]</th><th>event</th><th></th></tr>{evs}</table>")
        parts.extend(_img(p) for p in pngs)
    parts.append("</body></html>")
    path = out / "index.html"
    path.write_text("\n".join(parts))
    return path
