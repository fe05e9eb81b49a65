"""The excitation signal (edgewarden/gateway/policy/excitation.py): bounded by the
configured limits, seeded, and every start and stop on record."""

from __future__ import annotations

import numpy as np
import pytest

from edgewarden.gateway.config import ExcitationSection
from edgewarden.gateway.policy.excitation import Excitation

ACTIONS = ["coolant_flow_sp", "feed_flow_sp"]
SPAN = np.array([200.0, 200.0])


def excitation(rate: float = np.inf) -> tuple[Excitation, list[tuple[str, dict]]]:
    records: list[tuple[str, dict]] = []
    return Excitation(ACTIONS, SPAN, np.full(2, rate), ExcitationSection(),
                      lambda k, p: records.append((k, p))), records


def run(ex: Excitation, seconds: float, dt: float = 0.1, t0: float = 0.0,
        proposal: tuple[float, float] = (100.0, 100.0)) -> np.ndarray:
    out = []
    for k in range(round(seconds / dt)):
        off = ex.step(t0 + k * dt, np.array(proposal), np.zeros(2), SPAN)
        out.append(np.full(2, np.nan) if off is None else off.copy())
    return np.array(out)


def test_prbs_is_plus_or_minus_the_amplitude_held_and_seeded() -> None:
    ex, records = excitation()
    ex.start("prbs", {"coolant_flow_sp": 10.0}, 2.0, 60.0, 7, "alice", "history for IQL", 0.0)
    a = run(ex, 60.0)
    assert a[0, 0] == 0.0  # the start's own cycle moves nothing
    assert set(np.unique(a[1:, 0])) == {-10.0, 10.0} and (a[:, 1] == 0).all()
    blocks = [a[max(k * 20, 1):(k + 1) * 20, 0] for k in range(30)]  # a level every 2 s
    assert all((b == b[0]).all() for b in blocks) and len({b[0] for b in blocks}) == 2
    again, _ = excitation()
    again.start("prbs", {"coolant_flow_sp": 10.0}, 2.0, 60.0, 7, "bob", "", 100.0)
    assert (run(again, 60.0, t0=100.0)[:, 0] == a[:, 0]).all()  # the seed is the sequence
    assert records[0] == ("excitation", {"change": "start", "signal": "prbs", "amplitude": {"coolant_flow_sp": 10.0},
                                         "hold_s": 2.0, "duration_s": 60.0, "seed": 7, "actor": "alice",
                                         "reason": "history for IQL"})


def test_steps_end_by_themselves_and_a_stop_is_on_record() -> None:
    ex, records = excitation()
    ex.start("steps", {"feed_flow_sp": 5.0}, 1.0, 4.0, 0, "alice", "step test", 0.0)
    a = run(ex, 5.0)
    assert a[:40, 1].tolist() == [0.0] + [5.0] * 9 + [0.0] * 10 + [-5.0] * 10 + [0.0] * 10
    assert np.isnan(a[40:]).all() and not ex.active
    assert records[-1][1]["change"] == "stop" and records[-1][1]["reason"] == "completed"
    ex.start("steps", {"feed_flow_sp": 5.0}, 1.0, 4.0, 0, "alice", "", 10.0)
    assert ex.stop("operator: enough", "alice") and not ex.stop("again", "alice")
    assert records[-1][1] == {"change": "stop", "reason": "operator: enough", "actor": "alice", "levels": 0}


def test_it_ramps_at_half_the_rate_limit_and_stays_within_the_bounds() -> None:
    """The shield has nothing to cut on the excitation's account: a cut would count
    against the controller (and enough of them hand it over)."""
    ex, _ = excitation(rate=20.0)  # L/min per s: the excitation moves at 10
    ex.start("steps", {"coolant_flow_sp": 15.0}, 3.0, 12.0, 0, "alice", "", 0.0)
    a = run(ex, 3.0)
    assert a[:, 0].tolist()[:3] == pytest.approx([0.0, 1.0, 2.0]) and a[20, 0] == pytest.approx(15.0)
    assert (np.diff(a[:, 0]) <= 1.0 + 1e-9).all()
    ending = run(ex, 13.0, t0=3.0)  # (the last level, 0, and back: the steps end at 0 and stop at once)
    assert ex.active is False and np.isnan(ending[-5:, 0]).all()
    prbs, records = excitation(rate=20.0)
    prbs.start("prbs", {"coolant_flow_sp": 15.0}, 5.0, 5.0, 1, "alice", "", 0.0)
    b = run(prbs, 8.0)
    tail = b[50:, 0][~np.isnan(b[50:, 0])]  # after its 5 s: back to 0 at the same pace, then the stop
    assert abs(b[49, 0]) == pytest.approx(15.0) and len(tail) == 14  # 14, 13, ..., 1, then 0: stopped
    assert (np.abs(np.diff(np.abs(tail))) <= 1.0 + 1e-9).all() and records[-1][1]["reason"] == "completed"
    near_top, _ = excitation()
    near_top.start("steps", {"coolant_flow_sp": 15.0}, 3.0, 12.0, 0, "alice", "", 0.0)
    b = run(near_top, 12.0, proposal=(195.0, 100.0))  # 5 L/min below the bound
    assert b[:, 0].max() == pytest.approx(5.0) and b[:, 0].min() == pytest.approx(-15.0)


@pytest.mark.parametrize(("kind", "amplitude", "hold", "duration", "says"), [
    ("sine", {"feed_flow_sp": 5.0}, 1.0, 10.0, "kind 'sine'"),
    ("prbs", {}, 1.0, 10.0, "an amplitude per action"),
    ("prbs", {"T": 5.0}, 1.0, 10.0, "T is not an action"),
    ("prbs", {"feed_flow_sp": 25.0}, 1.0, 10.0, "at most 20 ([policy.excitation] max_fraction 0.1"),
    ("prbs", {"feed_flow_sp": -1.0}, 1.0, 10.0, "must be above 0"),
    ("prbs", {"feed_flow_sp": 5.0}, 0.1, 10.0, "hold 0.1 s: at least 1 s"),
    ("prbs", {"feed_flow_sp": 5.0}, 1.0, 1e6, "duration 1e+06 s: above 0 and at most 3600 s"),
])
def test_what_the_limits_refuse(kind: str, amplitude: dict, hold: float, duration: float, says: str) -> None:
    ex, records = excitation()
    with pytest.raises(ValueError, match=says.replace("(", r"\(").replace("[", r"\[").replace("+", r"\+")):
        ex.start(kind, amplitude, hold, duration, 0, "alice", "", 0.0)
    assert not ex.active and records == []


def test_a_prbs_controller_sees_its_own_output_and_a_step_test_does_not() -> None:
    """In a prbs the controller stays in control: it is shown its last output without the
    test signal (else a PID's anti-windup takes the signal for a cut). A step test is open
    loop: the controller sees what was written, so its integral does not run on."""
    prbs, _ = excitation()
    prbs.start("prbs", {"coolant_flow_sp": 10.0}, 1.0, 10.0, 0, "alice", "", 0.0)
    assert prbs.added is None  # nothing added yet
    off = prbs.step(0.1, np.array([100.0, 100.0]), np.zeros(2), SPAN)
    assert prbs.added is off and abs(off[0]) == 10.0
    prbs.stop("done", "alice")
    assert prbs.added is None
    steps, _ = excitation()
    steps.start("steps", {"coolant_flow_sp": 10.0}, 1.0, 10.0, 0, "alice", "", 0.0)
    assert steps.step(0.1, np.array([100.0, 100.0]), np.zeros(2), SPAN) is not None and steps.added is None
