"""PolicyContract: JSON round trip, strict validation, and matching against the tag map."""
from __future__ import annotations

import json
import math

import pytest

from edgewarden.gateway.errors import PolicyError
from edgewarden.gateway.policy.contract import ObsStats, PolicyContract, check_against

OBS = [("T_in", "degC"), ("T_out", "degC"), ("flow", "m3/h")]
ACT = [("valve", "%", 0.0, 100.0), ("pump", "rpm", 0.0, 3000.0)]


def make(**over) -> PolicyContract:
    kw = dict(
        observation_tags=[t for t, _ in OBS],
        observation_units=[u for _, u in OBS],
        action_tags=[a[0] for a in ACT],
        action_units=[a[1] for a in ACT],
        action_low=[a[2] for a in ACT],
        action_high=[a[3] for a in ACT],
        algorithm="td3+bc",
        dataset_hash="sha256:abc",
        training_config={"lr": 3e-4, "layers": [256, 256]},
    )
    kw.update(over)
    return PolicyContract(**kw)


def test_round_trip_is_exact_and_canonical():
    c = make(obs_stats=ObsStats(min=[0, 0, 0], max=[1, 2, 3], mean=[0.5, 1, 1.5], std=[0.1, 0.2, 0.3]))
    text = c.to_json()
    back = PolicyContract.from_json(text)
    assert back == c
    assert back.to_json() == text
    assert back.observation_tags == ("T_in", "T_out", "flow")
    assert back.action_low == (0.0, 0.0) and back.n_obs == 3 and back.n_act == 2
    assert json.loads(text)["format_version"] == 1


def test_round_trip_without_obs_stats():
    c = make()
    assert PolicyContract.from_json(c.to_json()) == c


def test_unknown_format_version_is_refused_clearly():
    d = json.loads(make().to_json())
    d["format_version"] = 2
    with pytest.raises(PolicyError, match=r"format_version 2 is not supported.*supported: \[1\]"):
        PolicyContract.from_json(json.dumps(d))
    with pytest.raises(PolicyError, match="format_version 7 is not supported"):
        make(format_version=7)


@pytest.mark.parametrize("drop", ["format_version", "action_tags"])
def test_missing_keys_refused(drop):
    d = json.loads(make().to_json())
    del d[drop]
    with pytest.raises(PolicyError, match=drop):
        PolicyContract.from_json(json.dumps(d))


def test_unknown_key_refused():
    d = json.loads(make().to_json())
    d["normaliser"] = "x"
    with pytest.raises(PolicyError, match=r"unknown keys \['normaliser'\]"):
        PolicyContract.from_json(json.dumps(d))


def test_not_json_refused():
    with pytest.raises(PolicyError, match="not valid JSON"):
        PolicyContract.from_json("{nope")
    with pytest.raises(PolicyError, match="expected a JSON object"):
        PolicyContract.from_json("[1]")


@pytest.mark.parametrize(
    ("over", "needle"),
    [
        ({"observation_units": ["degC"]}, "observation_units has 1 entries but observation_tags has 3"),
        ({"action_units": ["%"]}, "action_units has 1 entries but action_tags has 2"),
        ({"action_low": [0.0]}, "action_low has 1 entries but action_tags has 2"),
        ({"action_high": [1.0, 2.0, 3.0]}, "action_high has 3 entries but action_tags has 2"),
        ({"action_tags": [], "action_units": [], "action_low": [], "action_high": []}, "action_tags is empty"),
        ({"observation_tags": ["a", "a", "b"]}, "observation_tags repeats ['a']"),
    ],
)
def test_length_and_name_problems_refused(over, needle):
    with pytest.raises(PolicyError) as ei:
        make(**over)
    assert needle in str(ei.value)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_bounds_refused(bad):
    with pytest.raises(PolicyError, match=r"action_high\[1\]: Input should be a finite number"):
        make(action_high=[100.0, bad])


def test_non_finite_bounds_in_json_refused():
    text = make().to_json().replace("3000.0", "Infinity")
    with pytest.raises(PolicyError, match=r"action_high\[1\]: Input should be a finite number"):
        PolicyContract.from_json(text)


def test_low_above_high_refused():
    with pytest.raises(PolicyError, match=r"action 'pump': low 10.0 > high 5.0"):
        make(action_low=[0.0, 10.0], action_high=[100.0, 5.0])


def test_bool_and_string_bounds_refused():
    with pytest.raises(PolicyError, match=r"action_low\[0\]: Input should be a valid number"):
        make(action_low=[True, 0.0])
    with pytest.raises(PolicyError, match="action_low: Input should be a valid tuple"):
        make(action_low="0")


def test_obs_stats_length_checked():
    with pytest.raises(PolicyError, match="obs_stats has 1 entries but observation_tags has 3"):
        make(obs_stats=ObsStats(min=[0], max=[1], mean=[0], std=[1]))


def test_training_config_must_be_json():
    with pytest.raises(PolicyError, match="training_config is not plain JSON"):
        make(training_config={"x": object()})


# ------------------------------------------------------------- check_against
def test_check_against_accepts_a_matching_model_and_stricter_bounds():
    check_against(make(), OBS, ACT)
    check_against(make(action_low=[10.0, 0.0], action_high=[90.0, 1500.0]), OBS, ACT)


def test_check_against_tag_order():
    obs = [OBS[1], OBS[0], OBS[2]]
    with pytest.raises(PolicyError, match=r"observation tag order differs: model \['T_in', 'T_out', 'flow'\]"):
        check_against(make(), obs, ACT)


def test_check_against_missing_and_extra_tags():
    obs = [("T_in", "degC"), ("T_out", "degC"), ("level", "m")]
    with pytest.raises(PolicyError) as ei:
        check_against(make(), obs, ACT)
    msg = str(ei.value)
    assert "observation tags configured but not in the model: ['level']" in msg
    assert "observation tags in the model but not configured: ['flow']" in msg


def test_check_against_count():
    with pytest.raises(PolicyError, match="model has 2 action tags, configuration has 1"):
        check_against(make(), OBS, ACT[:1])


def test_check_against_lists_every_problem_at_once():
    obs = [("T_in", "K"), ("T_out", "degC"), ("flow", "l/s")]
    act = [("valve", "%", 0.0, 50.0), ("pump", "rpm", 100.0, 3000.0)]
    with pytest.raises(PolicyError) as ei:
        check_against(make(), obs, act)
    msg = str(ei.value)
    assert "(4 problems)" in msg
    assert "observation 'T_in': model units 'degC', configured units 'K'" in msg
    assert "observation 'flow': model units 'm3/h', configured units 'l/s'" in msg
    assert "action 'valve': model high bound 100 is above the configured high 50" in msg
    assert "action 'pump': model low bound 0 is below the configured low 100" in msg
