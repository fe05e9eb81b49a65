"""A first, honest policy for the CSTR: proportional temperature control, tuned on the model.

    coolant_flow = c0 + Kp (T - T_sp)        feed_flow = q0

``c0`` and ``q0`` are the twin's nominal actions; ``Kp`` is picked by a grid search that
simulates the plant model (edgewarden.simulators.plants.cstr) through setpoint steps and a feed
temperature disturbance, behind the example config's rate limit (100 L/min per second),
scoring integrated absolute tracking error plus a penalty on coolant movement. Each gain
is scored at the gateway's 10 Hz cycle in real time and with the plant running 5x faster
(how the demo runs the twin); the worse of the two counts, so the chosen gain is robust
to the slower effective sampling. The result is exported as a linear
ONNX policy with the model contract. Deterministic: the same code gives the same bytes,
so the shipped models/cstr_baseline.onnx can be checked against this command:

    edgewarden train baseline cstr --out models/cstr_baseline.onnx

The training issue replaces it with learned policies (BC, TD3+BC, IQL, CQL).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgewarden.gateway.policy.contract import PolicyContract
from edgewarden.simulators.plants import cstr

OBS_TAGS = ("T", "CA", "Tj", "T_sp")
OBS_UNITS = ("K", "mol/L", "K", "K")
ACT_TAGS = ("coolant_flow_sp", "feed_flow_sp")
ACT_UNITS = ("L/min", "L/min")
GAINS = (2.0, 4.0, 8.0, 16.0, 32.0, 64.0)  # L/min per K
CYCLE_S = 0.1
TIME_SCALES = (1.0, 5.0)  # plant seconds per real second: real time, and the demo's speed
RATE_LIMIT = 100.0  # L/min per (real) second, as in examples/cstr.toml
MOVE_PENALTY = 0.5


@dataclass(frozen=True)
class Tuning:
    kp: float
    score: float
    table: tuple[tuple[float, float], ...]  # (Kp, score) for every candidate


def _control(kp: float, obs: np.ndarray, t_sp: float) -> np.ndarray:
    c0, q0 = cstr.NOMINAL_ACTION
    u = np.array([c0 + kp * (obs[0] - t_sp), q0])
    return np.clip(u, cstr.SPEC.action_low, cstr.SPEC.action_high)


def score_gain(kp: float, *, time_scale: float = 1.0, minutes: float = 20.0) -> float:
    """Closed-loop cost of one gain: setpoint steps 350→345→355 K, then Tf +10 K."""
    plant = cstr.CstrPlant(seed=0)
    dt = CYCLE_S * time_scale  # plant time per gateway cycle
    n = int(minutes * 60 / dt)
    step = RATE_LIMIT * CYCLE_S
    cost, last_u = 0.0, cstr.NOMINAL_ACTION.copy()
    for k in range(n):
        frac = k / n
        t_sp = 350.0 if frac < 0.2 else 345.0 if frac < 0.5 else 355.0
        if frac >= 0.75:
            plant.set_disturbance("Tf", cstr.TF_NOMINAL + 10.0)
        obs = plant.observe()
        u = np.clip(_control(kp, obs, t_sp), last_u - step, last_u + step)
        plant.step(dt, u)
        cost += abs(obs[0] - t_sp) * dt + MOVE_PENALTY * abs(u[0] - last_u[0])
        last_u = u
        if not np.isfinite(obs).all() or obs[0] > 450.0:
            return float("inf")  # runaway
    return cost


def tune() -> Tuning:
    table = tuple((kp, max(score_gain(kp, time_scale=ts) for ts in TIME_SCALES)) for kp in GAINS)
    kp, score = min(table, key=lambda row: row[1])
    return Tuning(kp=kp, score=score, table=table)


def build(tuning: Tuning) -> bytes:
    from edgewarden.training.onnx_graph import build_linear_policy

    c0, q0 = (float(v) for v in cstr.NOMINAL_ACTION)
    weight = np.array([[tuning.kp, 0.0, 0.0, -tuning.kp], [0.0, 0.0, 0.0, 0.0]])
    bias = np.array([c0, q0])
    contract = PolicyContract(
        observation_tags=OBS_TAGS, observation_units=OBS_UNITS,
        action_tags=ACT_TAGS, action_units=ACT_UNITS,
        action_low=tuple(float(v) for v in cstr.SPEC.action_low),
        action_high=tuple(float(v) for v in cstr.SPEC.action_high),
        algorithm="proportional-baseline", dataset_hash="none (tuned on the model, no dataset)",
        training_config={"kp": tuning.kp, "c0": c0, "q0": q0, "gains_tried": list(GAINS),
                         "cycle_s": CYCLE_S, "time_scales": list(TIME_SCALES),
                         "rate_limit": RATE_LIMIT, "move_penalty": MOVE_PENALTY},
        input_name="obs", output_name="action",
    )
    return build_linear_policy(contract, weight, bias)


def make_baseline(out: Path) -> Tuning:
    from edgewarden.training.onnx_graph import write_model

    tuning = tune()
    write_model(out, build(tuning))
    return tuning


def describe(t: Tuning) -> str:
    rows = ", ".join(f"Kp={kp:g}: {s:.1f}" for kp, s in t.table)
    return json.dumps({"kp": t.kp, "score": round(t.score, 3)}) + f"  (scores: {rows})"
