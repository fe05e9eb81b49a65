"""Every invariant on synthetic evidence: it passes on a clean run and fails on a bad one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgewarden.hil import invariants as inv
from edgewarden.hil.gwconfig import ActionInfo, GatewayPlan
from edgewarden.hil.runner import EventLog, RunData
from edgewarden.hil.scenario import Event, Scenario

HZ = 20.0


def _data(sp: list[float], applied: list[float] | None = None, *, dt: float = 0.01,
          audit: list[dict] | None = None, events: list[EventLog] | None = None,
          extra: dict[str, list[float]] | None = None) -> RunData:
    sc = Scenario(path=Path("x.toml"), name="synthetic", description="", duration_s=10.0, plant="cstr",
                  twin=True, twin_options={}, external={}, config=Path("c.toml"), model=None,
                  cycle_hz=HZ, start=True, settings={}, events=[], invariants={})
    plan = GatewayPlan(Path("g.toml"), Path("audit"), Path("s.sock"), HZ,
                       [ActionInfo("feed_sp", "feed_sp", "feed", 0.0, 200.0, 50.0, 0.0)],
                       "heartbeat", {}, {})
    n = len(sp)
    d = RunData(sc, Path("."), plan=plan, t0=0.0)
    d.times = np.arange(n) * dt
    d.columns = {"feed_sp": np.array(sp, dtype=float),
                 "feed": np.array(applied if applied is not None else sp, dtype=float)}
    for k, v in (extra or {}).items():
        d.columns[k] = np.array(v, dtype=float)
    d.audit = audit or []
    d.events = events or []
    return d


def _ramp(start: float, step: float, n: int, hold: int = 5) -> list[float]:
    """A value that moves by ``step`` once per cycle (every ``hold`` 10 ms samples)."""
    return [start + step * (i // hold) for i in range(n)]


def test_limits_pass_on_a_rate_limited_ramp() -> None:
    d = _data(_ramp(0.0, 2.5, 200))  # 2.5 per 50 ms cycle = 50/s: exactly the limit
    assert inv.actions_within_limits(d).passed


def test_limits_fail_on_a_jump_and_out_of_bounds() -> None:
    v = inv.actions_within_limits(_data([10.0] * 50 + [60.0] * 50))
    assert not v.passed and "stepped 10 -> 60" in v.detail
    v = inv.actions_within_limits(_data(_ramp(190.0, 2.5, 50)))
    assert not v.passed and "outside [0, 200]" in v.detail


def test_limits_allow_the_safe_value_at_once_but_not_leaving_it() -> None:
    assert inv.actions_within_limits(_data([100.0] * 50 + [0.0] * 50)).passed  # e-stop
    assert not inv.actions_within_limits(_data([0.0] * 50 + [100.0] * 50)).passed


def test_limits_check_the_audit_log_too() -> None:
    audit = [{"kind": "cycle", "n": 0, "mode": "AUTO", "written": [10.0]},
             {"kind": "cycle", "n": 1, "mode": "AUTO", "written": [30.0]}]
    v = inv.actions_within_limits(_data([5.0] * 10, audit=audit))
    assert not v.passed and "audit cycle 1" in v.detail


def _modes(*marks: tuple[float, str]) -> list[dict]:
    return [{"kind": "mode", "t_mono": t, "to": m} for t, m in marks]


def test_no_write_in_manual() -> None:
    audit = _modes((0.0, "AUTO"), (0.3, "MANUAL"), (0.8, "AUTO"))
    assert inv.no_write_manual_estop(_data([5.0] * 100, audit=audit)).passed
    sp = [5.0] * 50 + [6.0] * 50  # moves at 0.5 s, inside MANUAL
    v = inv.no_write_manual_estop(_data(sp, audit=audit))
    assert not v.passed and "during MANUAL" in v.detail
    cyc = audit + [{"kind": "cycle", "n": 3, "mode": "MANUAL", "written": [5.0]}]
    assert not inv.no_write_manual_estop(_data([5.0] * 100, audit=cyc)).passed


def test_manual_with_operator_setpoints_may_write() -> None:
    audit = _modes((0.0, "AUTO"), (0.3, "MANUAL")) + [
        {"kind": "operator", "cmd": "manual", "setpoints": {"feed_sp": 6.0}, "t_mono": 0.3},
        {"kind": "cycle", "n": 3, "mode": "MANUAL", "written": [6.0]}]
    assert inv.no_write_manual_estop(_data([5.0] * 50 + [6.0] * 50, audit=audit)).passed


def test_only_safe_values_in_estop() -> None:
    audit = _modes((0.0, "AUTO"), (0.3, "ESTOP"))
    assert inv.no_write_manual_estop(_data([50.0] * 32 + [0.0] * 68, audit=audit)).passed
    v = inv.no_write_manual_estop(_data([50.0] * 32 + [0.0] * 40 + [9.0] * 28, audit=audit))
    assert not v.passed and "during ESTOP" in v.detail


def _ev(kind: str, t: float, **params: object) -> EventLog:
    return EventLog(Event(t, kind, dict(params)), t, t, True, {"ok": True})


def test_estop_reaction_budget() -> None:
    sp = [50.0] * 20 + [0.0] * 80          # safe 0.2 s after the trigger at 0.0
    d = _data(sp, events=[_ev("estop", 0.0)])
    assert inv.estop_reaction(d, 250).passed
    v = inv.estop_reaction(d, 100)
    assert not v.passed and v.value == pytest.approx(200, abs=1)
    assert not inv.estop_reaction(_data([50.0] * 100, events=[_ev("estop", 0.0)]), 1000).passed
    assert not inv.estop_reaction(_data([50.0] * 100), 1000).passed  # nothing measured


def test_estop_reaction_is_timed_from_the_injected_fault() -> None:
    """A trip after an injected fault counts from the fault, not from its detection: a
    gateway that takes 0.6 s to notice a hang fails a 0.3 s budget even though the safe
    outputs follow its detection at once."""
    sp = [50.0] * 70 + [0.0] * 30          # safe at 0.7 s; the hang began at 0.1 s, detected at 0.65 s
    trip = [{"kind": "trip", "code": "comms_loss", "t_mono": 0.65}]
    d = _data(sp, audit=trip, events=[_ev("fault", 0.1, fault="hang", target="opcua")])
    v = inv.estop_reaction(d, 300)
    assert not v.passed and v.value == pytest.approx(600, abs=1) and "hang" in v.detail
    assert inv.estop_reaction(d, 700).passed
    # a fault cleared before the trip is not its cause: then the trip is timed from detection
    cleared = _data(sp, audit=trip, events=[_ev("fault", 0.1, fault="hang", target="opcua"),
                                            _ev("clear_faults", 0.3)])
    v = inv.estop_reaction(cleared, 300)
    assert v.passed and v.value == pytest.approx(50, abs=1)


def test_heartbeat_loss_needs_remote_dropped() -> None:
    applied = [50.0] * 60 + [0.0] * 40
    remote = [1.0] * 60 + [0.0] * 40
    d = _data([50.0] * 100, applied, events=[_ev("kill_gateway", 0.0, signal="KILL")],
              extra={"remote": remote})
    assert inv.heartbeat_loss(d, 700).passed
    assert not inv.heartbeat_loss(d, 500).passed


def test_reconnect_time() -> None:
    hb = _ramp(0.0, 1.0, 300)[:100] + [19.0] * 120 + _ramp(20.0, 1.0, 80)
    d = _data([5.0] * 300, events=[_ev("fault", 0.5, fault="restart", target="opcua")],
              extra={"heartbeat": hb})
    d.events[0].t_done = 1.0
    v = inv.reconnect(d, 5.0)
    assert v.passed and v.value == pytest.approx(1.2, abs=0.02)
    assert not inv.reconnect(d, 1.0).passed


def test_deadline_rate_and_expectations() -> None:
    d = _data([5.0] * 10, audit=_modes((0.0, "AUTO"), (1.0, "ESTOP")) + [
        {"kind": "trip", "code": "plc_estop", "t_mono": 1.0}])
    d.statuses = [(0.0, {"stats": {"cycles": 1000, "deadline_misses": 20}})]
    assert inv.deadline_miss_rate(d, 0.05).passed and not inv.deadline_miss_rate(d, 0.01).passed
    assert inv.expect_modes(d, ["ESTOP"]).passed and not inv.expect_modes(d, ["FALLBACK"]).passed
    assert inv.expect_trips(d, ["plc_"]).passed and not inv.expect_trips(d, ["comms_loss"]).passed


def test_expect_fail_inverts_only_the_named_invariants() -> None:
    d = _data([5.0] * 10)
    ok, bad = inv.Verdict("a", True, ""), inv.Verdict("rate", False, "")
    assert not inv.scenario_passed(d, [ok, bad])
    d.scenario.expect_fail = ["rate"]
    assert inv.scenario_passed(d, [ok, bad])
    assert not inv.scenario_passed(d, [ok, inv.Verdict("rate", True, "")])
