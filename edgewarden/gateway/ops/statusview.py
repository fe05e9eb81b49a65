"""``edgewarden status``: the gateway's status reply as a page a person can read."""

from __future__ import annotations

import math
from typing import Any


def _ms(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)) or math.isnan(seconds):
        return "—"
    return f"{seconds * 1000:.2f} ms"


def _num(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _range(r: Any) -> str:
    return "" if not r else f"[{_num(r[0])}, {_num(r[1])}]"


def _policy_line(reply: dict[str, Any]) -> str:
    p = reply.get("policy") or {}
    if reply.get("writes") is False:
        return "policy  MONITOR: writes nothing to the plant (no actions, no heartbeat); start is refused"
    return f"policy  {p.get('kind', '?')} ({p.get('algorithm', '?')}, {str(p.get('sha256', ''))[:16]})"


def render(reply: dict[str, Any]) -> str:
    if reply.get("unreachable"):
        return f"no answer from the gateway: {reply.get('error')}"
    if not reply.get("ok"):
        return f"status refused: {reply.get('error')}"
    st = reply.get("stats", {})
    period = reply.get("period_s")
    lines = [
        f"gateway {reply.get('gateway', '?')}  pid {reply.get('pid')}  mode {reply.get('mode')}"
        + (f"  (manual held by {', '.join(reply['manual_by'])})" if reply.get("manual_by") else ""),
        f"cycle   period {_ms(period)}  last {_ms(st.get('last_cycle_s'))}  max {_ms(st.get('max_cycle_s'))}"
        f"  max lateness {_ms(st.get('max_lateness_s'))}",
        f"        cycles {st.get('cycles', 0)}  deadline misses {st.get('deadline_misses', 0)}"
        f"  holds {st.get('holds', 0)}  shield interventions {st.get('shield_interventions', 0)}"
        f"  write errors {st.get('write_errors', 0)}",
        _policy_line(reply),
        f"checks  {reply.get('verdict')}  data age {_ms(reply.get('data_age_s'))}"
        + (f"  interlocks active: {', '.join(reply['interlocks'])}" if reply.get("interlocks") else ""),
    ]
    models = reply.get("models") or {}
    if models.get("shadow"):
        lines.append(f"shadow  {str(models['shadow'])[:16]}  agreeing {models.get('shadow_agree_s', 0):.1f} s")
    auth = reply.get("authority")
    if auth:
        band = ", ".join(f"{k} ±{v:g}" + (" (full)" if v >= auth["full"][k] else "") for k, v in auth["band"].items())
        lines.append(f"band    {band} around the incumbent ({auth.get('incumbent')}); "
                     f"{'clean' if auth.get('engaged') else 'not in control'} {auth.get('clean_s', 0):.0f} s"
                     + (f" of {auth['widen_after_s']:g} s to widen" if auth.get("widen_after_s") else "")
                     + f"; clipped {auth.get('clips', 0)} cycles")
    ex = reply.get("excitation")
    if ex:
        amp = ", ".join(f"{k} ±{v:g}" for k, v in ex["amplitude"].items())
        lines.append(f"excite  {ex['signal']} {amp}, {ex['hold_s']:g} s a level, {ex['left_s']:.0f} s left (seed "
                     f"{ex['seed']}); excite stop ends it")
    fb = reply.get("fallback")
    if fb:
        lines.append(f"fallback {fb.get('reason')}; agreeing {fb.get('agreeing_s', 0):.1f} of {fb.get('needed_s')} s")
        lines.append(f"        hand-back: {fb.get('rule')}")
    accepts = reply.get("plc_accepts")
    if accepts is not None:
        lines.append(f"plc     accepts gateway setpoints: {'yes' if accepts else 'NO'}")
    for name, message in (reply.get("alarms") or {}).items():
        lines.append(f"alarm   {name}: {message}")
    trip = reply.get("last_trip")
    active = reply.get("mode") == "ESTOP"
    lines.append(f"trips   {reply.get('trips', 0)}" + (
        f"  {'ACTIVE' if active else 'last'}: {trip.get('code')} — {trip.get('message')} (by {trip.get('actor')})"
        if trip else ""))
    links = reply.get("links") or {}
    for name, h in links.items():
        state = "up" if h.get("connected") else "DOWN"
        lines.append(f"link    {name}: {state}  reconnects {h.get('reconnects', 0)}  rtt {_ms(h.get('rtt_s'))}"
                     + (f"  last error: {h['last_error']}" if h.get("last_error") else ""))
    lines.append(f"audit   {reply.get('audit_records', 0)} records")
    action = reply.get("action") or {}
    if action:
        lines.append("outputs " + "  ".join(f"{k}={_num(v)}" for k, v in action.items()))
    rows = reply.get("tags") or []
    if rows:
        w = max(len(r["name"]) for r in rows)
        lines.append("")
        lines.append(f"{'tag':<{w}}  {'value':>12}  {'units':<8} {'quality':<9} {'hard limits':<20} soft limits")
        for r in rows:
            lines.append(f"{r['name']:<{w}}  {_num(r['value']):>12}  {(r.get('units') or ''):<8} "
                         f"{r['quality']:<9} {_range(r.get('hard')):<20} {_range(r.get('soft'))}")
    return "\n".join(lines)
