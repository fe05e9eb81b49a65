"""The off-policy estimate (edgewarden/training/off_policy.py) on the history of a plant
whose answer is known: a first-order process, cooled by the action, run by a weak
proportional controller with a binary excitation on its valve (the history), and
candidates that are known to be better, worse, or beyond what the history can say."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgewarden.training.datasets import DatasetMeta
from edgewarden.training.off_policy import estimate
from edgewarden.training.reward import RewardError, RewardSpec

SP, U0, GAIN, TAU = 350.0, 100.0, 0.05, 20.0  # K, L/min, K per L/min, steps


def plant_step(x: np.ndarray, u: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """355 K at the nominal coolant flow, 1 K cooler per 20 L/min more, time constant TAU steps."""
    return x + (-(x - 355.0) - GAIN * (u - U0)) / TAU + rng.normal(0.0, 0.02, x.shape)


def history(rows: int = 4000, seed: int = 0, amplitude: float = 40.0, extra: dict | None = None) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    obs, act, nxt = [], [], []
    x = np.array([352.0])
    excite = 0.0
    for t in range(rows):
        sp = SP if (t // 500) % 2 == 0 else SP + 2.0  # setpoint steps: the exogenous column
        if t % 15 == 0:  # a pseudo-random binary excitation on the valve: the history shows what moves do
            excite = amplitude * rng.choice([-1.0, 1.0])
        u = np.clip(U0 + 10.0 * (x - sp) + excite, 0.0, 200.0)  # a weak P loop
        o = np.array([x[0], sp])
        x = plant_step(x, u, rng)
        obs.append(o), act.append(u), nxt.append([x[0], SP if ((t + 1) // 500) % 2 == 0 else SP + 2.0])
    ends = np.zeros(rows, bool)
    ends[rows // 2 - 1] = ends[-1] = True  # two runs
    meta = DatasetMeta(plant="first-order", observation_tags=("T", "T_sp"), observation_units=("K", "K"),
                       action_tags=("coolant",), action_units=("L/min",), action_low=(0.0,), action_high=(200.0,),
                       behaviour_policy="pid:0123456789abcdef", extra=extra or {})
    return SimpleNamespace(observations=np.asarray(obs, np.float32), actions=np.asarray(act, np.float32),
                           next_observations=np.asarray(nxt, np.float32), terminals=np.zeros(rows, bool),
                           timeouts=ends, meta=meta)


def proportional(kp: float):  # noqa: ANN201
    return lambda o: np.clip(U0 + kp * (o[:, :1] - o[:, 1:2]), 0.0, 200.0)


TRACK = RewardSpec(track=(("T", "T_sp"),))


@pytest.fixture(scope="module")
def data() -> SimpleNamespace:
    return history()


def test_a_stronger_loop_is_better_holding_still_is_worse(data: SimpleNamespace) -> None:
    better = estimate(data, proportional(30.0), TRACK, horizon=60)
    assert better.verdict == "better" and better.low > 0, better.line()
    assert better.replay_error < 0.1 and better.behaviour == "pid:0123456789abcdef"
    worse = estimate(data, lambda o: np.full((len(o), 1), U0), TRACK, horizon=60)
    assert worse.verdict == "worse" and worse.high < 0, worse.line()
    same = estimate(data, proportional(10.0), TRACK, horizon=60)  # the incumbent without its excitation
    assert same.verdict in ("not shown better", "better") and abs(same.difference) < better.difference


def test_what_the_history_never_showed_is_unreliable(data: SimpleNamespace) -> None:
    """A bang-bang controller drives the model far outside the states of the history; and
    a history with no excitation cannot vouch even for the stronger loop."""
    wild = estimate(data, lambda o: np.where(o[:, :1] > o[:, 1:2], 0.0, 200.0), TRACK, horizon=60)
    assert wild.verdict == "unreliable" and wild.outside > 0.2, wild.line()
    steady = estimate(history(amplitude=0.0), proportional(30.0), TRACK, horizon=60)
    assert steady.verdict != "better", steady.line()


def test_it_is_repeatable_and_moves_cost(data: SimpleNamespace) -> None:
    a = estimate(data, proportional(30.0), TRACK, horizon=60, seed=3)
    b = estimate(data, proportional(30.0), TRACK, horizon=60, seed=3)
    assert a == b
    costly = estimate(data, proportional(30.0), RewardSpec(track=TRACK.track, move=50.0), horizon=60, seed=3)
    assert costly.candidate < a.candidate  # the same loop, its moves now paid for


def test_a_history_too_short_or_a_reward_that_does_not_fit_is_an_error(data: SimpleNamespace) -> None:
    with pytest.raises(ValueError, match="fewer than 2 runs of 5000 consecutive rows"):
        estimate(data, proportional(30.0), TRACK, horizon=5000)
    with pytest.raises(RewardError, match="Tj is not an observation"):
        estimate(data, proportional(30.0), RewardSpec(track=(("Tj", 340.0),)), horizon=60)


def test_the_estimate_goes_into_the_manifest_of_that_model_only(tmp_path: Path) -> None:
    import json

    from edgewarden.gateway.errors import GatewayError
    from edgewarden.training.manifest import record_evidence
    from tests.helpers import write_linear_policy

    model = write_linear_policy(tmp_path / "m.onnx")
    where = record_evidence(model, "off_policy", {"verdict": "unreliable", "candidate": float("nan")})
    manifest = json.loads(where.read_text())  # strict JSON: a figure that is not finite is null
    assert manifest["evidence"]["off_policy"] == {"verdict": "unreliable", "candidate": None}
    assert manifest["model"] == "m.onnx"
    other = write_linear_policy(tmp_path / "other.onnx", bias=np.array([1.0, 2.0]))
    (tmp_path / "other.onnx.json").write_text(where.read_text())  # another model's manifest
    with pytest.raises(GatewayError, match="the manifest is another model's"):
        record_evidence(other, "off_policy", {"verdict": "better"})


# the history's loop as the gateway configures it: u = bias + kp·(setpoint − pv)
LOOP = {"coolant": {"pv": "T", "setpoint": "T_sp", "kp": -10.0, "ki": 0.0, "kd": 0.0, "bias": U0}}


def test_an_excited_history_judges_against_the_loop_itself_in_closed_loop() -> None:
    """The history's actions carry the excitation, which costs tracking: replayed, they
    would make the loop itself look beaten by its own imitation. With the loop known (from
    the log's configuration) it runs in closed loop, without the excitation."""
    excited = history(extra={"excited_rows": 4000, "incumbent_pid": LOOP, "period_s": 1.0})
    same = estimate(excited, proportional(10.0), TRACK, horizon=60)
    assert same.incumbent_run == "closed loop" and same.verdict == "not shown better", same.line()
    assert abs(same.difference) < 1e-6  # the same law, in the same model
    better = estimate(excited, proportional(30.0), TRACK, horizon=60)
    assert better.verdict == "better", better.line()
    unknown = estimate(history(extra={"excited_rows": 4000}), proportional(10.0), TRACK, horizon=60)
    assert unknown.incumbent_run == "replayed" and unknown.verdict == "unreliable" and "excitation" in unknown.note


@pytest.mark.parametrize(("text", "says"), [
    ('{"sha256": "SHA", "evidence": null}', '"evidence" is not an object'),
    ('{"sha256": "SHA", "evidence": []}', '"evidence" is not an object'),
    ("[" * 100_000 + "]" * 100_000, "is not a model manifest"),
    ("not json", "is not a model manifest"),
])
def test_a_manifest_the_gateway_would_refuse_is_refused_in_one_line(tmp_path: Path, text: str, says: str) -> None:
    import hashlib

    from edgewarden.gateway.errors import GatewayError
    from edgewarden.training.manifest import record_evidence
    from tests.helpers import write_linear_policy

    model = write_linear_policy(tmp_path / "m.onnx")
    before = text.replace("SHA", hashlib.sha256(model.read_bytes()).hexdigest())
    (tmp_path / "m.onnx.json").write_text(before)
    with pytest.raises(GatewayError, match=says):
        record_evidence(model, "off_policy", {"verdict": "better"})
    assert (tmp_path / "m.onnx.json").read_text() == before  # left as it was
