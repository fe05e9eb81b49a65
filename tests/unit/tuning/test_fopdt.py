"""FOPDT fit and SIMC settings (edgewarden/gateway/tuning/fopdt.py) on step tests of a
process whose model is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgewarden.gateway.tuning.fopdt import Fopdt, TuningError, fit_fopdt, simc


def step_test(gain: float, tau: float, dead: float, dt: float = 0.1, seconds: float = 160.0,
              hold: float = 20.0, noise: float = 0.01, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The process integrated finely (10 substeps a sample), steps +A, 0, -A, 0 on the action."""
    rng = np.random.default_rng(seed)
    n = round(seconds / dt)
    levels = (1.0, 0.0, -1.0, 0.0)
    u = np.array([100.0 + 15.0 * levels[int(k * dt // hold) % 4] for k in range(n)])
    y, x, sub = np.empty(n), 350.0, 10
    delay = round(dead / dt)
    for k in range(n):
        y[k] = x + rng.normal(0.0, noise)
        uk = u[max(k - delay, 0)]
        for _ in range(sub):
            x += (dt / sub) / tau * (-(x - 350.0) + gain * (uk - 100.0))
    return y, u


@pytest.mark.parametrize(("gain", "tau", "dead"), [(-0.05, 8.0, 1.0), (0.2, 3.0, 0.0), (-1.5, 15.0, 2.5)])
def test_the_model_of_a_known_process_is_found(gain: float, tau: float, dead: float) -> None:
    y, u = step_test(gain, tau, dead)
    m = fit_fopdt(y, u, 0.1)
    assert m.gain == pytest.approx(gain, rel=0.1)
    assert m.tau_s == pytest.approx(tau, rel=0.15)
    assert abs(m.dead_s - dead) <= 0.3 and m.fit > 0.95 and m.samples == len(y)


def test_simc_is_the_published_rule() -> None:
    """K = 2, τ = 10 s, θ = 1 s, τc = θ: Kc = τ / (K (τc + θ)) = 2.5, τI = min(τ, 4 (τc + θ)) = 8 s."""
    pi = simc(Fopdt(gain=2.0, tau_s=10.0, dead_s=1.0, fit=1.0, samples=100, dt_s=0.1), tau_c_s=1.0)
    assert pi.kp == pytest.approx(2.5) and pi.tau_i_s == pytest.approx(8.0) and pi.ki == pytest.approx(2.5 / 8.0)
    default = simc(Fopdt(gain=-0.05, tau_s=10.0, dead_s=0.0, fit=1.0, samples=1000, dt_s=0.1))
    assert default.tau_c_s == pytest.approx(2.0) and default.kp < 0  # cooling: reverse acting, τc = τ/5 at θ = 0


def test_data_that_cannot_give_a_model_says_why() -> None:
    y, u = step_test(-0.05, 8.0, 1.0)
    with pytest.raises(TuningError, match="the action did not move"):
        fit_fopdt(y, np.full_like(u, 100.0), 0.1)
    with pytest.raises(TuningError, match="at least 20 samples"):
        fit_fopdt(y[:5], u[:5], 0.1)
    with pytest.raises(TuningError, match="the PV did not move"):
        fit_fopdt(np.full_like(y, 350.0), u, 0.1)
    with pytest.raises(TuningError, match="no stable first-order answer"):
        fit_fopdt(350.0 + np.exp(np.arange(len(u)) * 0.05) * (1 + 0.01 * np.sin(np.arange(len(u)))), u, 0.1)


def test_a_lag_dominant_process_is_tuned_on_its_initial_slope() -> None:
    """τ = 200 s against 5 s steps: the PV never settles; K/τ is what the steps show, and
    SIMC's settings from it match those of the true process."""
    y, u = step_test(-2.0, 200.0, 0.5, hold=5.0, seconds=40.0, noise=0.002)
    m = fit_fopdt(y, u, 0.1)
    assert m.lag_dominant and m.gain / m.tau_s == pytest.approx(-2.0 / 200.0, rel=0.1)
    true = Fopdt(gain=-2.0, tau_s=200.0, dead_s=0.5, fit=1.0, samples=m.samples, dt_s=0.1)
    assert simc(m, tau_c_s=2.0).kp == pytest.approx(simc(true, tau_c_s=2.0).kp, rel=0.15)
    assert simc(m, tau_c_s=2.0).tau_i_s == pytest.approx(4.0 * (2.0 + m.dead_s))


def _log(d: Path, signal: str, bad_rows: tuple[int, ...] = ()) -> Path:
    """An audit log of a step test (or a prbs) on the coolant of a known process,
    ``bad_rows`` with an observation missing."""
    from edgewarden.gateway.audit import AuditWriter

    y, u = step_test(-0.05, 8.0, 1.0, seconds=80.0)
    with AuditWriter(d) as w:
        w.append("config_load", {"obs_tags": ["T", "T_sp"], "act_tags": ["coolant", "feed"]})
        w.append("excitation", {"change": "start", "signal": signal, "amplitude": {"coolant": 15.0}})
        for n in range(len(y)):
            obs = [float(y[n])] if n in bad_rows else [float(y[n]), 350.0]
            w.append("cycle", {"n": n, "mode": "AUTO", "obs": obs, "written": [float(u[n]), 100.0],
                               "excite": [float(u[n]) - 100.0, 0.0], "t_mono": 0.1 * n})
        w.append("excitation", {"change": "stop", "reason": "completed"})
    return d


def test_tune_reads_the_last_step_test_of_the_action_and_says_why_not_otherwise(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgewarden.gateway.cli import main

    log = _log(tmp_path / "steps", "steps", bad_rows=(5,))  # a malformed row splits the run; the longer half is fitted
    assert main(["tune", str(log), "--pv", "T", "--action", "coolant", "--setpoint", "350"]) == 0
    out = capsys.readouterr().out
    assert "model: T answers coolant with gain -0.0" in out and "setpoint = 350.0\nkp = " in out
    prbs = _log(tmp_path / "prbs", "prbs")
    assert main(["tune", str(prbs), "--pv", "T", "--action", "coolant", "--setpoint", "350"]) == 1
    err = capsys.readouterr().err
    assert "no step test of coolant in that range (a prbs is closed loop" in err and "Traceback" not in err
    assert main(["tune", str(log), "--pv", "T", "--action", "feed", "--setpoint", "350"]) == 1
    assert "no step test of feed" in capsys.readouterr().err
    assert main(["tune", str(log), "--pv", "X", "--action", "coolant", "--setpoint", "350"]) == 1
    assert "--pv X: not an observation of this log (observations: T, T_sp)" in capsys.readouterr().err
