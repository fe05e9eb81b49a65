"""Policies without a model: the schema ties each kind to what it needs, the PID loops are
the fallback's (one implementation), a start is bumpless, hold proposes what the plant gets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgewarden.data import MODELS
from edgewarden.gateway.config import PidSpec, load_config
from edgewarden.gateway.errors import ConfigError
from edgewarden.gateway.policy.controllers import ControllerPolicy
from edgewarden.gateway.policy.fallback import PidBank
from tests.helpers import CSTR_COOLANT_PID, write_config

PID = CSTR_COOLANT_PID


def config(tmp: Path, kind: str | None, extra: str = "", replace: dict[str, str] | None = None) -> Path:
    rep = {} if kind is None else {r'^path = "[^"]*"': f'kind = "{kind}"'}
    return write_config(tmp, policy=MODELS / "cstr_baseline.onnx", replace={**rep, **(replace or {})}, extra=extra)


@pytest.mark.parametrize(("kind", "extra", "replace", "message"), [
    ("onnx", "", {}, 'path: kind = "onnx" (the default) runs a model file'),
    ("pid", "", {}, 'pid: kind = "pid" needs at least one loop'),
    ("hold", PID, {}, 'pid: loops run only with kind = "pid"'),
    ("pid", PID.replace('pv = "T"', 'pv = "Tj"'), {r'^observations = .*': 'observations = ["T", "CA", "T_sp"]'},
     "policy.pid.coolant_flow_sp.pv: 'Tj' is not one of policy.observations"),
    ("monitor", "", {r"^auto_start = false": "auto_start = true"}, 'gateway.auto_start: kind = "monitor"'),
])
def test_each_kind_gets_what_it_needs(tmp_path: Path, kind: str, extra: str, replace: dict[str, str],
                                      message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(config(tmp_path, kind, extra, replace))
    assert message in str(exc.value)


def test_a_model_file_with_a_controller_is_refused(tmp_path: Path) -> None:
    path = config(tmp_path, None, replace={r"^\[policy\]": '[policy]\nkind = "hold"'})
    with pytest.raises(ConfigError, match="path: kind = 'hold' runs no model file"):
        load_config(path)


def test_controllers_load_and_name_their_tuning(tmp_path: Path) -> None:
    s = load_config(config(tmp_path, "pid", PID)).settings
    assert s.policy.path is None and s.policy.kind == "pid"
    pid = ControllerPolicy(s)
    retuned = ControllerPolicy(s.model_copy(update={"policy": s.policy.model_copy(update={
        "pid": {"coolant_flow_sp": s.policy.pid["coolant_flow_sp"].model_copy(update={"kp": -10.0})}})}))
    assert pid.algorithm == "pid" and pid.contract is None and pid.path is None
    assert pid.sha256 != retuned.sha256 and len(pid.sha256) == 64
    hold = ControllerPolicy(load_config(config(tmp_path, "hold")).settings)
    last = np.array([123.0, 45.0])
    hold.attach(last, np.zeros(4), 0.1)
    obs = np.array([350.0, 0.5, 300.0, 350.0], np.float32)
    assert hold.infer(obs).tolist() == [123.0, 45.0]
    last[:] = [130.0, 50.0]  # the loop's array, read each cycle
    assert hold.infer(obs).tolist() == [130.0, 50.0]


def test_a_pid_start_is_bumpless_then_acts(tmp_path: Path) -> None:
    s = load_config(config(tmp_path, "pid", PID)).settings
    pid = ControllerPolicy(s)
    last = np.array([180.0, 100.0])
    hot = np.array([360.0, 0.5, 300.0, 350.0], np.float32)  # 10 K above the setpoint
    pid.attach(last, hot.astype(np.float64), 0.1)
    first = pid.infer(hot).copy()
    # what the plant gets, plus one integral step (ki·e·dt = -0.2 · -10 K · 0.1 s): no bump
    assert first[0] == pytest.approx(180.0 + 0.2) and first[1] == 100.0
    last[:] = first
    assert pid.infer(hot)[0] > first[0]  # hotter than wanted: the integral adds coolant


@settings(max_examples=200, deadline=None, database=None)
@given(st.floats(250, 450), st.floats(250, 450), st.floats(0, 200), st.floats(-50, -0.1), st.floats(-2, -0.01))
def test_track_makes_the_next_output_the_last(pv: float, sp: float, last: float, kp: float, ki: float) -> None:
    from tests.helpers import EXAMPLE

    s = load_config(EXAMPLE).settings
    bank = PidBank.for_settings(s, {"coolant_flow_sp": PidSpec(pv="T", setpoint="T_sp", kp=kp, ki=ki, bias=100.0)}, ["T", "T_sp"])
    values = np.array([pv, sp])
    out = np.zeros(2)
    bank.track(values, np.array([last, 0.0]))
    bank.compute(values, np.array([last, 0.0]), 0.0, out)  # dt 0: no integration step, the tracked state alone
    assert out[0] == pytest.approx(last, abs=1e-9)


def test_config_check_runs_the_policy_against_the_tags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A model whose contract does not fit the tag map: config check refuses it (not only
    model check), naming the key and the reason; a controller passes and says what runs."""
    from edgewarden.gateway.cli import main

    wrong = config(tmp_path, None, replace={r'^path = "[^"]*"': f'path = "{MODELS / "tanks_iql.onnx"}"'})
    assert main(["config", "check", str(wrong)]) == 78
    err = capsys.readouterr().err
    assert f"{wrong}: policy.path: " in err and "tanks_iql.onnx" in err
    (tmp_path / "pid").mkdir()
    assert main(["config", "check", str(config(tmp_path / "pid", "pid", PID))]) == 0
    assert "policy pid (1 loop(s): coolant_flow_sp; the other actions hold)" in capsys.readouterr().out


def test_status_says_a_monitor_writes_nothing() -> None:
    from edgewarden.gateway.ops.statusview import render

    base = {"ok": True, "mode": "READY", "policy": {"kind": "monitor", "algorithm": "monitor", "sha256": "ab" * 32}}
    assert "MONITOR: writes nothing to the plant" in render({**base, "writes": False})
    assert "policy  pid (pid, abababababababab)" in render({**base, "writes": True, "policy": {
        "kind": "pid", "algorithm": "pid", "sha256": "ab" * 32}})


def test_the_integral_does_not_wind_up_against_what_the_shield_cut() -> None:
    """A rate limit ramping, or an interlock pinning the output: the plant does not get what
    the loop asks, so the integral stops growing that way; it still unwinds, and it grows
    again as soon as the plant gets the loop's output."""
    from tests.helpers import EXAMPLE

    s = load_config(EXAMPLE).settings
    bank = PidBank.for_settings(s, {"coolant_flow_sp": PidSpec(pv="T", setpoint="T_sp", kp=-20.0, ki=-2.0, bias=100.0)},
                   ["T", "T_sp"])
    hot, cold = np.array([351.0, 350.0]), np.array([349.0, 350.0])
    out, pinned = np.zeros(2), np.array([100.0, 0.0])  # the shield keeps writing 100
    bank.compute(hot, pinned, 0.1, out)
    asked = out[0]
    assert asked > 100.0  # hot: more coolant
    for _ in range(100):
        bank.compute(hot, pinned, 0.1, out)
    assert out[0] == asked  # ten seconds pinned: no windup
    bank.compute(cold, pinned, 0.1, out)
    assert out[0] == pytest.approx(100.0 - 20.0)  # unwinding is allowed: the one step it had, undone
    bank.compute(cold, pinned, 0.1, out)
    assert out[0] == pytest.approx(100.0 - 20.0)  # now the plant gets more than asked: no windup down
    followed = out.copy()  # from here the plant gets what the loop asks
    bank.compute(hot, followed, 0.1, out)
    again = out[0]
    bank.compute(hot, out.copy(), 0.1, out)
    assert out[0] > again  # hot, not cut: the integral grows again
