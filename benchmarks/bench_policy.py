"""ONNX policy inference: OnnxPolicy.infer vs a bare onnxruntime call, same model, same run.

Target (DESIGN.md): a 2x256 MLP (16 -> 256 -> 256 -> 4) through ``OnnxPolicy.infer`` costs
<= 1.1x a bare ``session.run`` of the same model, with p99 <= 30 us. The model normalises
its input (Sub, Mul), has ReLU hidden layers and clips its output to the action bounds: the
graph ``training.onnx_export.build_mlp_policy`` makes by default.

The bare call is what a user of onnxruntime would write: a session with the same latency
options, ``session.run(None, {"obs": x})`` on a (1, 16) float32 array made fresh from the
observation. ``infer`` does more (shape check, copy, non-finite check, float64 result).
The two are interleaved, so both see the same machine noise.

    .venv/bin/python benchmarks/bench_policy.py [--iterations 20000] [--seed 0]
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from gateway.policy.contract import PolicyContract
from gateway.policy.onnx_policy import OnnxPolicy, session_options
from training.onnx_export import build_mlp_policy, write_model

N_OBS, HIDDEN, N_ACT = 16, 256, 4


def make_model(seed: int) -> tuple[PolicyContract, bytes]:
    rng = np.random.default_rng(seed)
    contract = PolicyContract(
        observation_tags=tuple(f"obs{i:02d}" for i in range(N_OBS)),
        observation_units=("1",) * N_OBS,
        action_tags=tuple(f"act{i}" for i in range(N_ACT)),
        action_units=("1",) * N_ACT,
        action_low=(-1.0,) * N_ACT,
        action_high=(1.0,) * N_ACT,
        algorithm="random-mlp",
        dataset_hash="none",
        training_config={"hidden": [HIDDEN, HIDDEN], "seed": seed},
    )
    sizes = [N_OBS, HIDDEN, HIDDEN, N_ACT]
    layers = [
        (rng.normal(size=(o, i)) / np.sqrt(i), rng.normal(size=o) * 0.1)
        for i, o in zip(sizes[:-1], sizes[1:], strict=True)
    ]
    offset, scale = rng.normal(size=N_OBS), rng.uniform(0.5, 2.0, size=N_OBS)
    return contract, build_mlp_policy(contract, layers, obs_offset=offset, obs_scale=scale)


def stats(ns: np.ndarray) -> dict[str, float]:
    us = ns / 1000.0
    return {"median": float(np.median(us)), "p99": float(np.percentile(us, 99)), "max": float(us.max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    contract, data = make_model(args.seed)
    with tempfile.TemporaryDirectory() as d:
        path = write_model(Path(d) / "mlp.onnx", data)
        policy = OnnxPolicy.load(
            path,
            expected_obs=list(zip(contract.observation_tags, contract.observation_units, strict=True)),
            expected_act=list(
                zip(contract.action_tags, contract.action_units, contract.action_low, contract.action_high, strict=True)
            ),
        )
    bare = ort.InferenceSession(data, session_options(), providers=["CPUExecutionProvider"])

    rng = np.random.default_rng(args.seed + 1)
    observations = rng.normal(size=(256, N_OBS))

    def run_bare(obs: np.ndarray) -> np.ndarray:
        return bare.run(None, {"obs": obs.astype(np.float32).reshape(1, N_OBS)})[0]

    # Same answers (the bare output is float32).
    for obs in observations[:32]:
        np.testing.assert_allclose(policy.infer(obs), run_bare(obs)[0], rtol=0, atol=1e-6)
    for obs in observations:  # warm both paths equally
        policy.infer(obs)
        run_bare(obs)

    n = args.iterations
    t_policy = np.empty(n, dtype=np.int64)
    t_bare = np.empty(n, dtype=np.int64)
    clock = time.perf_counter_ns
    infer = policy.infer
    gc.collect()
    gc.disable()
    try:
        for i in range(n):
            obs = observations[i & 255]
            if i & 1:  # alternate which goes first, so neither always gets the warmer cache
                t0 = clock(); infer(obs); t1 = clock(); run_bare(obs); t2 = clock()  # noqa: E702
                t_policy[i], t_bare[i] = t1 - t0, t2 - t1
            else:
                t0 = clock(); run_bare(obs); t1 = clock(); infer(obs); t2 = clock()  # noqa: E702
                t_bare[i], t_policy[i] = t1 - t0, t2 - t1
    finally:
        gc.enable()

    sp, sb = stats(t_policy), stats(t_bare)
    print(f"policy {N_OBS}->{HIDDEN}->{HIDDEN}->{N_ACT} MLP, {n} iterations each, interleaved")
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"onnxruntime {ort.__version__}")
    print(f"{'':22s}{'median':>9s}{'p99':>9s}{'max':>10s}   (us)")
    print(f"{'bare session.run':22s}{sb['median']:9.2f}{sb['p99']:9.2f}{sb['max']:10.1f}")
    print(f"{'OnnxPolicy.infer':22s}{sp['median']:9.2f}{sp['p99']:9.2f}{sp['max']:10.1f}")
    ratio = sp["median"] / sb["median"]
    ratio99 = sp["p99"] / sb["p99"]
    print(f"ratio infer/bare: median {ratio:.2f}x, p99 {ratio99:.2f}x   (goal <= 1.10x)")
    ok = ratio <= 1.10 and sp["p99"] <= 30.0
    print(f"target (median ratio <= 1.10, infer p99 <= 30 us): {'MET' if ok else 'NOT MET'}")


if __name__ == "__main__":
    main()
