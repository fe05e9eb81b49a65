"""ONNX policy inference: OnnxPolicy.infer vs a bare onnxruntime call, same model, same run.

Target: a 2x256 MLP (16 -> 256 -> 256 -> 4) through ``OnnxPolicy.infer`` costs
<= 1.1x a bare ``session.run`` of the same model, with p99 <= 30 us. The model normalises
its input (Sub, Mul), has ReLU hidden layers and clips its output to the action bounds: the
graph ``edgewarden.training.onnx_graph.build_mlp_policy`` makes by default.

The bare call is what a user of onnxruntime would write: a session with the same latency
options, ``session.run(None, {"obs": x})`` on a (1, 16) float32 array made fresh from the
observation. ``infer`` does more (shape check, copy, non-finite check, float64 result).
The two are interleaved, so both see the same machine noise.

2. ``--swap-mb 1,16,64``: what loading a model of that size at run time costs the
   cycle. The gateway validates a new model in a worker thread (``asyncio.to_thread``,
   as ``edgewarden model load`` and the file watch do) while the event loop runs; a
   100 Hz ticker on the loop (absolute deadlines) records how late it wakes during the
   load, against the same ticker with no load. The model: the MLP above with one wide
   hidden layer that makes the file that size.

``--uncertainty``: the same MLP with two 256-256 critic heads in the graph (the
uncertainty output an IQL/TD3+BC/CQL export carries); the bare call then computes both
outputs too, and ``infer`` also binds the second one.

    .venv/bin/python benchmarks/bench_policy.py [--iterations 20000] [--seed 0] [--swap-mb 1,16,64] [--uncertainty]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from _common import machine, summary_us

from edgewarden.gateway.policy.contract import PolicyContract
from edgewarden.gateway.policy.onnx_policy import OnnxPolicy, session_options
from edgewarden.training.onnx_graph import build_mlp_policy, write_model

N_OBS, HIDDEN, N_ACT = 16, 256, 4


def make_model(seed: int, uncertainty: bool = False) -> tuple[PolicyContract, bytes]:
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
    if not uncertainty:
        return contract, build_mlp_policy(contract, layers, obs_offset=offset, obs_scale=scale)
    from edgewarden.gateway.policy.contract import Uncertainty

    contract = contract.replaced(uncertainty=Uncertainty(method="critic_disagreement", scale=1.0, threshold=5.0))
    q_sizes = [N_OBS + N_ACT, HIDDEN, HIDDEN, 1]
    critics = [[(rng.normal(size=(o, i)) / np.sqrt(i), rng.normal(size=o) * 0.1)
                for i, o in zip(q_sizes[:-1], q_sizes[1:], strict=True)] for _ in range(2)]
    return contract, build_mlp_policy(contract, layers, obs_offset=offset, obs_scale=scale, head="tanh",
                                      critics=critics)


def wide_model(mb: float, seed: int) -> tuple[PolicyContract, bytes]:
    """The benchmark's contract with one hidden layer wide enough for ``mb`` MiB of weights."""
    rng = np.random.default_rng(seed)
    contract, _ = make_model(seed)
    hidden = max(1, int(mb * 2**20 / 4 / (N_OBS + N_ACT)))
    layers = [(rng.normal(size=(hidden, N_OBS)).astype(np.float32) * 0.01, np.zeros(hidden)),
              (rng.normal(size=(N_ACT, hidden)).astype(np.float32) * 0.01, np.zeros(N_ACT))]
    return contract, build_mlp_policy(contract, layers)


async def lateness_during(load: Any, period: float = 0.01) -> tuple[float, list[float]]:
    """Run ``load`` in a worker thread while a ticker sleeps to absolute deadlines on the
    loop; (seconds the load took, lateness of each tick in ms)."""
    loop = asyncio.get_running_loop()
    late: list[float] = []
    done = False

    async def tick() -> None:
        t = loop.time()
        while not done:
            t += period
            await asyncio.sleep(t - loop.time())
            late.append((loop.time() - t) * 1000.0)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.2)
    late.clear()
    t0 = time.perf_counter()
    if load is None:
        await asyncio.sleep(1.0)
    else:
        await asyncio.to_thread(load)
    took = time.perf_counter() - t0
    done = True
    await ticker
    return took, late


def bench_swap(sizes_mb: list[float], seed: int) -> None:
    print()
    print("model load in a worker thread: lateness of a 100 Hz ticker on the event loop meanwhile (ms)")
    print(f"{'model':>12s} {'load s':>8s} {'ticks':>6s} {'median':>8s} {'p99':>8s} {'max':>8s}  ticks > 10 ms late")
    took, late = asyncio.run(lateness_during(None))
    print(f"{'(no load)':>12s} {took:8.2f} {len(late):6d} {np.median(late):8.2f} {np.percentile(late, 99):8.2f} "
          f"{max(late):8.2f}  {sum(x > 10 for x in late)}")
    with tempfile.TemporaryDirectory() as d:
        for mb in sizes_mb:
            contract, data = wide_model(mb, seed)
            path = write_model(Path(d) / f"wide{mb:g}.onnx", data)
            obs = list(zip(contract.observation_tags, contract.observation_units, strict=True))
            act = list(zip(contract.action_tags, contract.action_units, contract.action_low, contract.action_high,
                           strict=True))
            took, late = asyncio.run(lateness_during(
                lambda p=path, o=obs, a=act: OnnxPolicy.load(p, expected_obs=o, expected_act=a, max_bytes=2**31)))
            size = f"{path.stat().st_size / 2**20:.1f} MiB"
            print(f"{size:>12s} {took:8.2f} {len(late):6d} {np.median(late):8.2f} {np.percentile(late, 99):8.2f} "
                  f"{max(late):8.2f}  {sum(x > 10 for x in late)}")


def stats(ns: np.ndarray) -> dict[str, float]:
    return summary_us(ns, 1e-3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--swap-mb", default="", help="also: cycle lateness while loading models of these sizes")
    ap.add_argument("--uncertainty", action="store_true", help="the MLP with two critic heads and the uncertainty output")
    args = ap.parse_args()
    if args.swap_mb:
        bench_swap([float(x) for x in args.swap_mb.split(",")], args.seed)
        return

    contract, data = make_model(args.seed, args.uncertainty)
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
        if args.uncertainty:
            want = bare.run(None, {"obs": obs.astype(np.float32).reshape(1, N_OBS)})[1][0, 0]
            np.testing.assert_allclose(policy.uncertainty, want, rtol=1e-6)
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
    print(f"policy {N_OBS}->{HIDDEN}->{HIDDEN}->{N_ACT} MLP" + (" + two critic heads and the uncertainty output"
                                                             if args.uncertainty else "")
          + f", {n} iterations each, interleaved")
    print(f"machine: {machine()}; onnxruntime {ort.__version__}")
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
