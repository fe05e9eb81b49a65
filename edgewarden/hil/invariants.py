"""Invariants over the evidence of a run: the PLC-side recording and the audit log.

Each check returns a :class:`Verdict` (passed, the measured value, the budget, a one-line
detail). They are plain functions of :class:`edgewarden.hil.runner.RunData`, so unit tests can feed
them synthetic recordings and show that each one can fail.

Time: the recording, the events and the audit records' ``t_mono`` all use the machine's
monotonic clock (CLOCK_MONOTONIC is shared by every process on the host), so the
gateway's records and the PLC's image line up without any clock exchange.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgewarden.hil.runner import RunData
from edgewarden.hil.scenario import ESTOP_TRIGGERS

EPS = 1e-6
WRITING = ("AUTO", "FALLBACK", "MANUAL")


@dataclass
class Verdict:
    name: str
    passed: bool
    detail: str
    value: float | None = None
    budget: float | None = None
    samples: list[float] | None = None

    def __post_init__(self) -> None:
        self.value = None if self.value is None else float(self.value)
        self.samples = None if self.samples is None else [float(x) for x in self.samples]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def mode_intervals(data: RunData) -> list[tuple[float, float, str]]:
    """(start, end, mode) from the audit log's mode records (monotonic times)."""
    marks = [(r["t_mono"], r["to"]) for r in data.audit if r.get("kind") == "mode"]
    end = float(data.times[-1]) if len(data.times) else (marks[-1][0] if marks else 0.0)
    out = []
    for i, (t, m) in enumerate(marks):
        t_next = marks[i + 1][0] if i + 1 < len(marks) else end
        out.append((t, t_next, m))
    return out


def _changes(t: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Indices where the value differs from the previous sample (NaN-safe)."""
    if len(v) < 2:
        return np.zeros(0, dtype=int)
    diff = (v[1:] != v[:-1]) & ~(np.isnan(v[1:]) & np.isnan(v[:-1]))
    return np.flatnonzero(diff) + 1


# ---- actions within bounds and rate limits ----------------------------------------------
def actions_within_limits(data: RunData) -> Verdict:
    plan = data.plan
    assert plan is not None
    period = 1.0 / plan.cycle_hz
    problems: list[str] = []
    worst = 0.0
    t = data.times
    # PLC side: every value the setpoint registers took, and every step between them
    for a in plan.actions:
        v = data.columns.get(a.plc_tag)
        if v is None:
            problems.append(f"{a.plc_tag} not recorded")
            continue
        bad = np.flatnonzero((v < a.lo - EPS) | (v > a.hi + EPS))
        if len(bad):
            i = bad[0]
            problems.append(f"PLC {a.plc_tag} = {v[i]:g} outside [{a.lo:g}, {a.hi:g}] at "
                            f"t = {t[i] - data.t0:.2f} s")
        applied = data.columns.get(a.applied_tag)
        # one shielded write moves a register by at most max_rate x the cycle period
        allowed = a.max_rate * period * (1 + 1e-3) + EPS
        for i in _changes(t, v):
            if abs(v[i] - a.safe) <= EPS:  # the e-stop path writes the safe value at once
                continue
            # from the register's last value, or — on a hand-back after MANUAL/ESTOP, when
            # the register was not written — from what the PLC applied (bumpless)
            step = abs(v[i] - v[i - 1])
            if applied is not None:  # any output applied within the last three cycles
                win = applied[(t >= t[i] - 3 * period) & (t < t[i])]
                win = win[np.isfinite(win)]
                if len(win):
                    step = min(step, float(np.min(np.abs(v[i] - win))))
            worst = max(worst, step / max(allowed, EPS))
            if step > allowed:
                problems.append(f"PLC {a.plc_tag} stepped {v[i - 1]:g} -> {v[i]:g} at "
                                f"t = {t[i] - data.t0:.2f} s (one cycle's rate limit allows {allowed:g})")
    # audit side: every written action in a writing mode against the one before it
    prev: dict[str, Any] | None = None
    for r in data.audit:
        if r.get("kind") != "cycle":
            continue
        w = r.get("written")
        if w is not None:
            for a, x in zip(plan.actions, w):
                if not (a.lo - EPS <= x <= a.hi + EPS):
                    problems.append(f"audit cycle {r['n']}: {a.name} = {x:g} outside [{a.lo:g}, {a.hi:g}]")
            if prev is not None and r["mode"] in WRITING and prev["mode"] in WRITING:
                for a, x, y in zip(plan.actions, prev["written"], w):
                    if abs(y - x) > a.max_rate * period * (1 + 1e-6) + EPS:
                        problems.append(f"audit cycle {r['n']}: {a.name} {x:g} -> {y:g} exceeds "
                                        f"{a.max_rate:g}/s")
        prev = r if w is not None else None
    detail = (f"{len(problems)} violation(s); first: {problems[0]}" if problems
              else f"every write within bounds and rate limits (worst step {worst:.0%} of its limit)")
    return Verdict("actions_within_limits", not problems, detail, value=float(len(problems)), budget=0.0)


# ---- no write in MANUAL or ESTOP ----------------------------------------------------------
def no_write_manual_estop(data: RunData, grace_s: float | None = None) -> Verdict:
    plan = data.plan
    assert plan is not None
    grace = grace_s if grace_s is not None else 2.0 / plan.cycle_hz + 0.05
    problems: list[str] = []
    manual_sp = False
    for r in data.audit:
        k = r.get("kind")
        if k == "operator" and r.get("cmd") == "manual":
            manual_sp = bool(r.get("setpoints"))
        if k != "cycle" or r.get("written") is None:
            continue
        if r["mode"] == "MANUAL" and not manual_sp:
            problems.append(f"audit cycle {r['n']}: written {r['written']} in MANUAL")
        if r["mode"] == "ESTOP" and any(abs(x - a.safe) > EPS for a, x in zip(plan.actions, r["written"])):
            problems.append(f"audit cycle {r['n']}: written {r['written']} in ESTOP (not the safe values)")
    t = data.times
    sp_intervals = _manual_setpoint_times(data)
    for start, end, mode in mode_intervals(data):
        if mode not in ("MANUAL", "ESTOP"):
            continue
        sel = (t >= start + grace) & (t <= end)
        if mode == "MANUAL" and any(s <= start + grace <= e for s, e in sp_intervals):
            continue
        for a in plan.actions:
            v = data.columns.get(a.plc_tag)
            if v is None or not sel.any():
                continue
            seg = v[sel]
            # ESTOP: the registers may only move to the safe value (while the PLC cannot be
            # reached they keep what they had: its dead-man, not a write, makes it safe)
            moved = [i for i in _changes(t[sel], seg) if abs(seg[i] - a.safe) > EPS]
            if mode == "ESTOP" and moved:
                i = moved[0]
                problems.append(f"PLC {a.plc_tag} changed to {seg[i]:g} during ESTOP "
                                f"(t = {t[sel][i] - data.t0:.2f} s)")
            if mode == "MANUAL" and len(_changes(t[sel], seg)):
                i = int(_changes(t[sel], seg)[0])
                problems.append(f"PLC {a.plc_tag} changed to {seg[i]:g} during MANUAL "
                                f"(t = {t[sel][i] - data.t0:.2f} s)")
    detail = (f"{len(problems)} violation(s); first: {problems[0]}" if problems
              else "nothing but the safe values written in ESTOP, nothing written in MANUAL")
    return Verdict("no_write_manual_estop", not problems, detail, value=float(len(problems)), budget=0.0)


def _manual_setpoint_times(data: RunData) -> list[tuple[float, float]]:
    out, start = [], None
    for r in data.audit:
        if r.get("kind") == "operator" and r.get("cmd") in ("manual", "auto"):
            if start is not None:
                out.append((start, r["t_mono"]))
                start = None
            if r.get("cmd") == "manual" and r.get("setpoints"):
                start = r["t_mono"]
    if start is not None:
        out.append((start, math.inf))
    return out


# ---- timing -------------------------------------------------------------------------------
def _first_at_or_after(t: np.ndarray, ok: np.ndarray, t_from: float) -> float | None:
    idx = np.flatnonzero((t >= t_from) & ok)
    return float(t[idx[0]]) if len(idx) else None


def _safe_mask(data: RunData, tags: list[tuple[str, float]]) -> np.ndarray:
    ok = np.ones(len(data.times), dtype=bool)
    for tag, safe in tags:
        v = data.columns.get(tag)
        ok &= np.abs(v - safe) <= EPS if v is not None else False
    return ok


def estop_reaction(data: RunData, budget_ms: float) -> Verdict:
    """Trigger → every output the PLC applies is at its safe value (written by the gateway,
    or, when the gateway cannot reach the PLC, applied by the PLC's own dead-man).

    A trigger is an operator or PLC e-stop event, or the injected fault behind a trip the
    gateway recorded: the latest ``fault`` event before the trip (not cleared since), so
    that the time the gateway took to notice counts too. Only a trip with no fault before it (a process
    excursion) is timed from its detection."""
    plan = data.plan
    assert plan is not None
    ok = _safe_mask(data, [(a.applied_tag, a.safe) for a in plan.actions])
    triggers = [(e.t, e.event.label()) for e in data.events if e.event.kind in ESTOP_TRIGGERS]
    covered = [t for t, _ in triggers]
    faults = sorted((e.t, e.event.label()) for e in data.events if e.event.kind == "fault")
    clears = [e.t for e in data.events if e.event.kind == "clear_faults"]
    for r in data.audit:
        if r.get("kind") != "trip" or any(0 <= r["t_mono"] - t <= budget_ms / 1000 for t in covered):
            continue
        # the latest fault before the trip, unless the faults were cleared in between
        behind = [(t, label) for t, label in faults if t <= r["t_mono"]
                  and not any(t <= c <= r["t_mono"] for c in clears)]
        if behind:
            t_fault, label = behind[-1]
            if t_fault not in covered:
                covered.append(t_fault)
                triggers.append((t_fault, f"{label} (trip {r.get('code')})"))
        else:
            triggers.append((r["t_mono"], f"trip {r.get('code')} (from detection)"))
    if not triggers:
        return Verdict("estop_reaction", False, "no e-stop trigger happened: nothing measured",
                       budget=budget_ms)
    samples, problems = [], []
    for t_trig, label in triggers:
        t_safe = _first_at_or_after(data.times, ok, t_trig)
        if t_safe is None:
            problems.append(f"{label}: safe outputs never reached the PLC")
            continue
        ms = (t_safe - t_trig) * 1000
        samples.append(ms)
        if ms > budget_ms:
            problems.append(f"{label}: {ms:.0f} ms")
    worst = max(samples) if samples else None
    detail = (f"{'; '.join(problems)} (budget {budget_ms:g} ms)" if problems else
              f"{len(samples)} trigger(s), worst {worst:.0f} ms (budget {budget_ms:g} ms)")
    return Verdict("estop_reaction", not problems, detail, value=worst, budget=budget_ms, samples=samples)


def heartbeat_loss(data: RunData, budget_ms: float) -> Verdict:
    """Gateway gone (killed) → the PLC applies its safe outputs and drops REMOTE."""
    plan = data.plan
    assert plan is not None
    tags = [(a.applied_tag, a.safe) for a in plan.actions]
    ok = _safe_mask(data, tags)
    if "remote" in data.columns:
        ok &= data.columns["remote"] == 0
    losses = [e for e in data.events if e.event.kind == "kill_gateway"]
    if not losses:
        return Verdict("heartbeat_loss", False, "the gateway was never killed: nothing measured",
                       budget=budget_ms)
    samples, problems = [], []
    for e in losses:
        t_safe = _first_at_or_after(data.times, ok, e.t)
        if t_safe is None:
            problems.append("the PLC never reached its safe state")
            continue
        samples.append((t_safe - e.t) * 1000)
        if samples[-1] > budget_ms:
            problems.append(f"{samples[-1]:.0f} ms")
    detail = (f"PLC safe state after the gateway died: {'; '.join(problems)} (budget {budget_ms:g} ms)"
              if problems else f"PLC safe {max(samples):.0f} ms after the gateway died (budget {budget_ms:g} ms)")
    return Verdict("heartbeat_loss", not problems, detail, value=max(samples) if samples else None,
                   budget=budget_ms, samples=samples)


def reconnect(data: RunData, budget_s: float) -> Verdict:
    """Server restart/drop → the gateway's heartbeat moves in the PLC again."""
    plan = data.plan
    assert plan is not None
    hb = data.columns.get(plan.heartbeat_tag)
    outages = [e for e in data.events if e.event.kind == "fault"
               and e.event.params.get("fault") in ("restart", "drop")]
    if hb is None or not outages:
        return Verdict("reconnect", False, "no server restart/drop in the timeline: nothing measured",
                       budget=budget_s)
    t = data.times
    idx = _changes(t, hb)
    samples, problems = [], []
    for e in outages:
        after = [t[i] for i in idx if t[i] > e.t_done]
        if not after:
            problems.append(f"{e.event.label()}: the heartbeat never moved again")
            continue
        samples.append(after[0] - e.t_done)
        if samples[-1] > budget_s:
            problems.append(f"{e.event.label()}: {samples[-1]:.2f} s")
    detail = (f"{'; '.join(problems)} (budget {budget_s:g} s)" if problems else
              f"heartbeat back {max(samples):.2f} s after the server came back (budget {budget_s:g} s)")
    return Verdict("reconnect", not problems, detail, value=max(samples) if samples else None,
                   budget=budget_s, samples=samples)


# ---- audit and cycle health ---------------------------------------------------------------
def audit_chain(data: RunData) -> Verdict:
    from edgewarden.gateway.audit.verify import verify

    plan = data.plan
    assert plan is not None
    res = verify(plan.audit_dir)
    if not res.ok:
        return Verdict("audit", False, f"the chain does not verify: {res.error}")
    ns = [r["n"] for r in data.audit if r.get("kind") == "cycle"]
    if not ns:
        return Verdict("audit", False, "no cycle records")
    gaps = [(a, b) for a, b in zip(ns, ns[1:]) if b != a + 1]
    if gaps:
        return Verdict("audit", False, f"cycle records missing between n={gaps[0][0]} and n={gaps[0][1]}")
    # every cycle the gateway reported (before it was killed, if it was) has its record
    horizon = (data.killed_at - 0.5) if data.killed_at is not None else math.inf
    seen = [st["stats"]["cycles"] for t, st in data.statuses if t <= horizon and "stats" in st]
    need = max(seen) if seen else 0
    if ns[-1] + 1 < need:
        return Verdict("audit", False, f"the gateway reported {need} cycles, the log covers {ns[-1] + 1}")
    return Verdict("audit", True, f"chain verifies ({res.records} records), cycles 0..{ns[-1]} "
                   f"covered without a gap", value=float(res.records))


def deadline_miss_rate(data: RunData, budget: float) -> Verdict:
    stats = [st["stats"] for _, st in data.statuses if "stats" in st]
    if not stats:
        return Verdict("deadline_miss_rate", False, "no status from the gateway", budget=budget)
    last = stats[-1]
    rate = last["deadline_misses"] / max(1, last["cycles"])
    return Verdict("deadline_miss_rate", rate <= budget,
                   f"{last['deadline_misses']} misses in {last['cycles']} cycles = {rate:.2%} "
                   f"(budget {budget:.2%})", value=rate, budget=budget)


def expect_modes(data: RunData, modes: list[str]) -> Verdict:
    seen = {r["to"] for r in data.audit if r.get("kind") == "mode"}
    missing = [m for m in modes if m not in seen]
    return Verdict("expect_modes", not missing,
                   f"modes never entered: {missing}" if missing else f"entered {', '.join(modes)}")


def expect_trips(data: RunData, codes: list[str]) -> Verdict:
    seen = [str(r.get("code")) for r in data.audit if r.get("kind") == "trip"]
    missing = [c for c in codes if not any(s.startswith(c) for s in seen)]
    return Verdict("expect_trips", not missing,
                   f"trips not seen: {missing} (seen: {seen})" if missing else f"tripped: {', '.join(seen)}")


def events_ok(data: RunData) -> Verdict:
    bad = [f"{e.event.label()} at {e.t - data.t0:.2f} s: {e.reply}" for e in data.events if not e.ok]
    return Verdict("events_ok", not bad, f"refused/failed: {bad[0]}" if bad
                   else f"all {len(data.events)} events carried out")


def evaluate(data: RunData) -> list[Verdict]:
    inv = data.scenario.invariants
    out: list[Verdict] = []
    if data.error is not None:
        out.append(Verdict("run", False, data.error))
    if data.plan is None:
        return out
    if inv.get("events_ok"):
        out.append(events_ok(data))
    if inv.get("actions_within_limits"):
        out.append(actions_within_limits(data))
    if inv.get("no_write_manual_estop"):
        out.append(no_write_manual_estop(data))
    if "estop_reaction_ms" in inv:
        out.append(estop_reaction(data, float(inv["estop_reaction_ms"])))
    if "heartbeat_loss_ms" in inv:
        out.append(heartbeat_loss(data, float(inv["heartbeat_loss_ms"])))
    if "reconnect_s" in inv:
        out.append(reconnect(data, float(inv["reconnect_s"])))
    if inv.get("audit"):
        out.append(audit_chain(data))
    if "deadline_miss_rate" in inv:
        out.append(deadline_miss_rate(data, float(inv["deadline_miss_rate"])))
    if inv.get("expect_modes"):
        out.append(expect_modes(data, list(inv["expect_modes"])))
    if inv.get("expect_trips"):
        out.append(expect_trips(data, list(inv["expect_trips"])))
    return out


def scenario_passed(data: RunData, verdicts: list[Verdict]) -> bool:
    """All pass, except those the scenario says must fail, which must fail ("this should fail")."""
    expect_fail = set(data.scenario.expect_fail)
    for v in verdicts:
        if v.name in expect_fail:
            if v.passed:
                return False
        elif not v.passed:
            return False
    return not (expect_fail - {v.name for v in verdicts})
