"""Promotion evidence (edgewarden/gateway/policy/evidence.py): a policy that copies its own
output is named, one that acts on measurements is not; transients are told from steady
state in the incumbent's actions."""

from __future__ import annotations

import numpy as np
import pytest

from edgewarden.gateway.policy.evidence import TransientWatch, copying, echo_observations, sensitivity

OBS = ["T", "CA", "Tj", "T_sp", "coolant_flow", "feed_flow"]
ACT = ["coolant_flow_sp", "feed_flow_sp"]
APPLIED = {"coolant_flow_sp": "coolant_flow", "feed_flow_sp": "feed_flow"}
SPAN = np.array([200.0, 200.0])


def linear(weight: np.ndarray, bias: np.ndarray):  # noqa: ANN201
    return lambda x: x.astype(np.float64) @ weight.T + bias


def inputs(n: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    base = np.array([350.0, 0.5, 335.0, 350.0, 150.0, 100.0])
    return base + rng.normal(0.0, [1.0, 0.01, 1.0, 0.0, 5.0, 2.0], size=(n, len(OBS)))


def test_echoes_are_the_actions_and_their_readbacks() -> None:
    assert echo_observations(OBS, ACT, APPLIED) == {4: 0, 5: 1}
    assert echo_observations(["T", "coolant_flow_sp"], ACT, {}) == {1: 0}
    assert echo_observations(OBS[:4], ACT, APPLIED) == {}


def test_a_policy_that_copies_its_readbacks_is_named_and_a_measurement_policy_is_not() -> None:
    x = inputs()
    scale = x.std(axis=0)
    echoes = echo_observations(OBS, ACT, APPLIED)
    copy = np.zeros((2, 6))
    copy[0, 4] = copy[1, 5] = 1.0
    found = copying(sensitivity(linear(copy, np.zeros(2)), x, scale, SPAN), echoes, OBS, ACT)
    assert [c.action for c in found] == ACT and found[0].share == pytest.approx(1.0)
    assert "coolant_flow" in found[0].message() and "copies its own output" in found[0].message()

    pid_like = np.zeros((2, 6))
    pid_like[0, 0], pid_like[0, 3] = 20.0, -20.0  # coolant on T - T_sp
    assert copying(sensitivity(linear(pid_like, np.full(2, 100.0)), x, scale, SPAN), echoes, OBS, ACT) == []

    mostly = pid_like.copy()
    mostly[0, 4] = 0.2  # leans a little on the readback: not a copy
    sens = sensitivity(linear(mostly, np.zeros(2)), x, scale, SPAN)
    assert copying(sens, echoes, OBS, ACT) == []
    assert sens[0, 0] == pytest.approx(20.0 * scale[0] / 200.0, rel=1e-4)  # (the policy runs in float32)  # one std of T, in shares of the span


def test_transients_are_counted_apart_and_compared() -> None:
    w = TransientWatch(SPAN, period=0.1)  # ten cycles a second
    action = np.array([100.0, 100.0])
    for _ in range(30):  # steady
        assert not w.step(action, True, np.zeros(2))
    flags = [w.step(action + [4.0 * (k + 1), 0.0], k % 2 == 0, np.array([10.0, 0.0]))
             for k in range(10)]  # a setpoint step: the incumbent ramps 40 L/min in a second
    assert flags == [False, False] + [True] * 8  # a move of more than 5 % of the span within a second
    action = action + [40.0, 0.0]
    for _ in range(30):
        w.step(action, True, np.zeros(2))
    for k in range(10):  # a second one, after more than a second of calm
        w.step(action - [4.0 * (k + 1), 0.0], False, np.array([20.0, 0.0]))
    r = w.report
    assert r.transients == 2 and r.cycles == 80
    assert 20 <= r.transient_cycles <= 40  # each step shows for up to a second after it
    assert r.agree_steady > 0.9 and 0.0 < r.agree_transient < 0.5  # (a ramp's first 4 % counts as steady)
    assert r.divergence_transient > 0.04
    assert r.to_dict()["transients"] == 2


def test_a_move_across_unwatched_cycles_is_not_a_transient() -> None:
    """The shadow is not stepped in HOLD or MANUAL: a setpoint moved meanwhile must not
    count as a transient the shadow saw."""
    w = TransientWatch(SPAN, period=0.1)
    for _ in range(15):
        w.step(np.array([100.0, 100.0]), True, np.zeros(2))
    w.forget()  # the gap
    for _ in range(15):
        assert not w.step(np.array([160.0, 100.0]), True, np.zeros(2))
    assert w.report.transients == 0


def test_each_transient_says_how_the_shadow_compared_and_what_the_plant_then_did() -> None:
    """A setpoint step: the incumbent ramps 40 L/min, the shadow lags it, T swings; the
    report keeps that transient with the incumbent's move, the shadow's agreement and
    divergence in it, and each observation's range from its start."""
    w = TransientWatch(SPAN, period=0.1, names=["T", "coolant_flow"])
    action = np.array([100.0, 100.0])
    for _ in range(15):
        w.step(action, True, np.zeros(2), np.array([350.0, 100.0]))
    for k in range(10):
        moved = action + [4.0 * (k + 1), 0.0]
        w.step(moved, k > 5, np.array([20.0 - 2.0 * k, 0.0]), np.array([350.0 - 0.3 * k, moved[0]]))
    for k in range(30):
        w.step(moved, True, np.zeros(2), np.array([347.3 + 0.1 * k, moved[0]]))  # the plant comes back
    (each,) = w.report.to_dict()["each"]
    # the move passes 5 % of the span on its 3rd cycle, and stays a move for a second after
    assert each["start_cycle"] == 18 and each["cycles"] == 8 + 7
    assert each["move"] == pytest.approx(0.2) and each["agree"] == pytest.approx((4 + 7) / 15, abs=1e-4)
    assert each["divergence"] == pytest.approx(sum(20.0 - 2.0 * k for k in range(2, 10)) / 15 / 200.0, abs=1e-4)
    assert each["plant"]["T"] == [pytest.approx(347.3), pytest.approx(350.2)]
    assert each["plant"]["coolant_flow"] == [pytest.approx(112.0), pytest.approx(140.0)]
