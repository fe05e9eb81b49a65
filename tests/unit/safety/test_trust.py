"""Bounded authority (edgewarden/gateway/safety/trust.py): a learned policy's proposal held
to a band around the incumbent's, the incumbent run beside it, the band earned and lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgewarden.gateway.config import Settings, load_config
from edgewarden.gateway.safety.trust import TrustRegion
from tests.helpers import write_config, write_linear_policy

MONITORED = ["T", "T_sp"]  # the fallback PID's pv and setpoint (cstr example: coolant on T)
CONTROLLER = type("Pid", (), {"contract": None})()  # what a kind = "pid"/"hold" controller looks like
LEARNED = type("Onnx", (), {"contract": object()})()


def settings(tmp_path: Path, authority: str = "", fallback: str = "pid") -> Settings:
    replace = {r"^\[safety.fallback\]": f"[safety.authority]\n{authority}\n\n[safety.fallback]"}
    if fallback == "hold":
        replace[r'^controller = "pid"'] = 'controller = "hold"'
    policy = write_linear_policy(tmp_path / "p.onnx")
    return load_config(write_config(tmp_path, policy=policy, replace=replace)).settings


def region(s: Settings, changes: list[dict[str, Any]] | None = None) -> TrustRegion:
    return TrustRegion(s, MONITORED, (changes if changes is not None else []).append, LEARNED)


def test_anchor_holds_a_learned_policy_within_the_band_around_where_control_began(tmp_path: Path) -> None:
    t = region(settings(tmp_path, fallback="hold"))
    assert t.source == "anchor" and t.start.tolist() == [20.0, 20.0]  # 10 % of each 0..200 span
    applied = np.array([100.0, 100.0])
    for _ in range(50):  # however long it pushes, the anchor does not move
        proposal = np.array([200.0, 0.0])
        assert t.limit(proposal, np.array([350.0, 350.0]), applied, 0.1, 0.0)
        assert proposal.tolist() == [120.0, 80.0]
    inside = np.array([110.0, 95.0])
    assert not t.limit(inside, np.array([350.0, 350.0]), applied, 0.1, 0.0) and inside.tolist() == [110.0, 95.0]


def test_the_pid_incumbent_drags_a_policy_that_copies_its_last_action_along(tmp_path: Path) -> None:
    """The case the band exists for: a policy that repeats its last action (it learned the
    valves' readbacks) while the reactor heats up. The PID incumbent (coolant on T) asks for
    more coolant as T rises; the band drags the copy along behind it."""
    t = region(settings(tmp_path))
    assert t.source == "fallback pid"
    applied = np.array([60.0, 100.0])  # coolant low after a manual excursion
    action = applied.copy()
    for k in range(100):
        temperature = 350.0 + 0.3 * k  # heating: T - T_sp grows
        proposal = action.copy()  # copies its last action
        t.limit(proposal, np.array([temperature, 350.0]), action, 0.1, 0.1 * k)
        action = proposal
    assert t.incumbent[0] > 150.0  # the PID asks for far more coolant than 60 ...
    assert action[0] >= t.incumbent[0] - t.band[0] - 1e-9 > 60.0  # ... and the copy is held to it
    assert action[1] == pytest.approx(100.0)  # no loop on the feed: anchored where control began


def test_the_band_widens_after_clean_time_and_a_clip_or_trouble_restarts_the_clock(tmp_path: Path) -> None:
    changes: list[dict[str, Any]] = []
    t = region(settings(tmp_path, "band = { coolant_flow_sp = 30.0 }\nwiden_after_s = 10.0\nwiden_factor = 2.0",
                        fallback="hold"), changes)
    assert t.start.tolist() == [30.0, 20.0]
    applied, values = np.array([100.0, 100.0]), np.array([350.0, 350.0])

    def cycle(now: float, proposal: tuple[float, float] = (100.0, 100.0)) -> bool:
        return t.limit(np.array(proposal), values, applied, 0.1, now)

    cycle(0.0)
    cycle(9.9)
    assert t.band.tolist() == [30.0, 20.0]
    cycle(10.0)
    assert t.band.tolist() == [60.0, 40.0] and changes[-1]["actor"] == "gateway"
    assert cycle(15.0, (200.0, 100.0))  # a clip: no widening for another widen_after_s
    cycle(24.0)
    assert t.band.tolist() == [60.0, 40.0]
    t.unclean(30.0)  # an intervention, an out-of-distribution input, a soft alarm
    cycle(39.0)
    assert t.band.tolist() == [60.0, 40.0]
    for now in (40.0, 50.0, 60.0, 70.0, 80.0):
        cycle(now)
    assert t.band.tolist() == [200.0, 200.0]  # up to the span: full authority, and no further
    n = len(changes)
    cycle(90.0)
    assert len(changes) == n
    t.release(trouble=False)  # MANUAL: the band earned stays
    assert t.band.tolist() == [200.0, 200.0]
    t.release(trouble=True)  # a hand-over to the fallback, a trip: back to the start
    assert t.band.tolist() == [30.0, 20.0] and "taken" in changes[-1]["reason"]


def test_an_operator_sets_the_band_and_a_bad_one_is_refused_naming_it(tmp_path: Path) -> None:
    changes: list[dict[str, Any]] = []
    t = region(settings(tmp_path, fallback="hold"), changes)
    t.set_band({"feed_flow_sp": 50.0}, "alice", "step test went well")
    assert t.band.tolist() == [20.0, 50.0] and changes[-1]["actor"] == "alice"
    assert changes[-1]["previous"] == {"coolant_flow_sp": 20.0, "feed_flow_sp": 20.0}
    t.set_band("full", "alice", "commissioned")
    assert t.band.tolist() == [200.0, 200.0]
    t.set_band("start", "bob", "back")
    assert t.band.tolist() == [20.0, 20.0]
    for bad, needle in (({"T": 5.0}, "'T' is not one of the actions"), ({"feed_flow_sp": 0.0}, "positive"),
                        ({"feed_flow_sp": float("nan")}, "positive"), ({}, "ACTION=VALUE"), ("wide", "ACTION=VALUE")):
        with pytest.raises(ValueError, match=needle):
            t.set_band(bad, "mallory", "")  # type: ignore[arg-type]
    assert t.band.tolist() == [20.0, 20.0]


def test_a_controller_without_a_model_is_the_incumbent_itself_no_band(tmp_path: Path) -> None:
    changes: list[dict[str, Any]] = []
    t = region(settings(tmp_path, fallback="hold"), changes)
    t.set_band("full", "alice", "")
    t.use_policy(CONTROLLER)
    assert not t.applies and t.band.tolist() == [20.0, 20.0]  # a swap puts the band back to the start
    proposal = np.array([200.0, 0.0])
    assert not t.limit(proposal, np.zeros(2), np.array([100.0, 100.0]), 0.1, 0.0)
    assert proposal.tolist() == [200.0, 0.0]


def test_the_commissioned_model_has_full_authority_and_keeps_it_through_trouble(tmp_path: Path) -> None:
    t = region(settings(tmp_path, fallback="hold"))
    t.use_policy(LEARNED, full=True)  # the model [policy] path names (band_configured_model = false)
    proposal = np.array([200.0, 0.0])
    assert not t.limit(proposal, np.zeros(2), np.array([100.0, 100.0]), 0.1, 0.0)
    assert proposal.tolist() == [200.0, 0.0]
    t.release(trouble=True)
    assert t.band.tolist() == [200.0, 200.0]
    t.use_policy(LEARNED)  # a model promoted over it: the starting band
    assert t.band.tolist() == [20.0, 20.0]


def test_a_band_for_an_unknown_action_fails_config_check(tmp_path: Path) -> None:
    from edgewarden.gateway.errors import ConfigError

    with pytest.raises(ConfigError, match=r"safety.authority.band.T: not one of policy.actions"):
        settings(tmp_path, "band = { T = 5.0 }")


def test_a_trip_after_manual_still_puts_the_band_back(tmp_path: Path) -> None:
    """MANUAL disengages the incumbent without trouble; a trip after it must still reset
    the band (it used to be reset only while the incumbent was engaged)."""
    changes: list[dict[str, Any]] = []
    t = region(settings(tmp_path, fallback="hold"), changes)
    t.set_band("full", "alice", "")
    t.release(trouble=False)  # MANUAL
    assert t.band.tolist() == [200.0, 200.0]
    t.release(trouble=True)  # then an e-stop
    assert t.band.tolist() == [20.0, 20.0]
