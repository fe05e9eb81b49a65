"""One shared tester for every algorithm over observation/action shapes, plus export parity."""

from __future__ import annotations

import math

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from edgewarden.training.algos import ALGOS, make_algorithm
from edgewarden.training.datasets import Dataset, DatasetMeta
from edgewarden.training.nets import Replay, obs_stats

SHAPES = [(1, 1), (7, 3)]  # (4, 2) is covered by the export test
SMALL = {"hidden": (16, 16), "batch_size": 32}


def _dataset(n_obs: int, n_act: int, n: int = 400) -> Dataset:
    rng = np.random.default_rng(0)
    obs = (rng.normal(size=(n, n_obs)) * 10 + 300).astype(np.float32)
    lo, hi = np.arange(n_act, dtype=float), np.arange(n_act, dtype=float) + 5.0
    meta = DatasetMeta(plant="toy", observation_tags=tuple(f"o{i}" for i in range(n_obs)),
                       observation_units=("K",) * n_obs, action_tags=tuple(f"a{i}" for i in range(n_act)),
                       action_units=("%",) * n_act, action_low=tuple(lo), action_high=tuple(hi))
    term = np.zeros(n, bool)
    term[::37] = True
    return Dataset(obs, rng.uniform(lo, hi, (n, n_act)).astype(np.float32), rng.normal(size=n).astype(np.float32),
                   np.roll(obs, -1, 0), term, np.zeros(n, bool), meta)


def _run(name: str, ds: Dataset, seed: int, steps: int = 6):
    st = obs_stats(ds)
    algo = make_algorithm(name, ds.meta.n_obs, ds.meta.n_act, st["mean"], st["std"], device="cpu",
                          seed=seed, overrides=SMALL)
    rep = Replay(ds, torch.device("cpu"), seed)
    logs = [_floats(algo.update(rep.sample(SMALL["batch_size"]))) for _ in range(steps)]
    return algo, rep, logs


def _floats(m: dict[str, torch.Tensor]) -> dict[str, float]:
    assert all(isinstance(v, torch.Tensor) and v.numel() == 1 and not v.requires_grad for v in m.values())
    return {k: float(v) for k, v in m.items()}


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"obs{s[0]}-act{s[1]}")
@pytest.mark.parametrize("name", sorted(ALGOS))
def test_algorithm_contract(name: str, shape: tuple[int, int]) -> None:
    ds = _dataset(*shape)
    algo, rep, logs = _run(name, ds, seed=0)
    assert all(isinstance(v, float) and np.isfinite(v) for m in logs for v in m.values())
    a = algo.act(ds.observations[:5])
    assert a.shape == (5, shape[1]) and np.all(np.abs(a) <= 1.0)
    # deterministic under the seed
    _, _, logs2 = _run(name, ds, seed=0)
    assert logs == logs2
    # a state dict round trip continues the identical stream
    sd = copy.deepcopy(algo.state_dict())  # as torch.save would: no tensors shared with algo
    st = obs_stats(ds)
    twin = make_algorithm(name, shape[0], shape[1], st["mean"], st["std"], device="cpu", seed=99, overrides=SMALL)
    twin.load_state_dict(sd)
    rep2 = Replay(ds, torch.device("cpu"), 0)
    rep2.gen.set_state(rep.gen.get_state())
    assert _floats(algo.update(rep.sample(32))) == _floats(twin.update(rep2.sample(32)))


@pytest.mark.parametrize("name", sorted(ALGOS))
def test_paper_defaults_are_the_default_config(name: str) -> None:
    cfg = ALGOS[name][1]()
    assert cfg.batch_size == 256 and cfg.hidden == (256, 256)
    expected = {"td3bc": {"alpha": 2.5, "policy_noise": 0.2, "noise_clip": 0.5, "policy_freq": 2},
                "iql": {"expectile": 0.7, "beta": 3.0, "exp_adv_max": 100.0},
                "cql": {"cql_alpha": 5.0, "n_actions": 10},
                "bc": {"lr": 3e-4}}[name]
    assert {k: getattr(cfg, k) for k in expected} == expected


@pytest.mark.parametrize("name", sorted(ALGOS))
def test_export_matches_torch_and_loads_in_the_gateway(name: str, tmp_path: Path) -> None:
    from edgewarden.gateway.policy.onnx_policy import OnnxPolicy
    from edgewarden.training.export import PARITY_TOL, export_checkpoint
    from edgewarden.training.fit import fit

    ds = _dataset(4, 2)
    fit(name, ds, 5, tmp_path / "run", progress=False, overrides=SMALL, log_every=0)
    r = export_checkpoint(tmp_path / "run" / "last.pt", tmp_path / "p.onnx", rename={})
    assert r.parity_normalized <= PARITY_TOL
    policy = OnnxPolicy.load(tmp_path / "p.onnx", expected_obs=[(f"o{i}", "K") for i in range(4)],
                             expected_act=[("a0", "%", 0.0, 5.0), ("a1", "%", 1.0, 6.0)], sha256=r.sha256)
    assert policy.contract.algorithm == name and policy.contract.obs_stats is not None
    out = policy.infer(ds.observations[0])
    assert out.shape == (2,) and 0.0 <= out[0] <= 5.0 and 1.0 <= out[1] <= 6.0
    # a critic ensemble gives an uncertainty output, equal to torch's figure in the data's p99.9
    unc = policy.contract.uncertainty
    if name == "bc":
        assert unc is None and math.isnan(policy.uncertainty)
        return
    from edgewarden.training.fit import load_checkpoint
    from edgewarden.training.uncertainty import figure

    algo, ck = load_checkpoint(tmp_path / "run")
    cal = ck["uncertainty"]
    assert unc.method == "critic_disagreement" and unc.scale == cal["p999"] and unc.threshold == 5.0
    assert cal["states"] == len(ds) and cal["p50"] <= cal["p99"] <= cal["p999"] <= cal["max"]
    far = ds.observations[:3] + 50.0 * ds.observations.std(0)  # far outside the data
    for obs in (ds.observations[0], *far):
        policy.infer(obs)
        assert policy.uncertainty == pytest.approx(float(figure(algo, obs[None])[0]) / unc.scale, rel=1e-4, abs=1e-4)
    assert policy.uncertainty > 1.0  # the last one, far outside: beyond the data's own p99.9
    r2 = export_checkpoint(tmp_path / "run", tmp_path / "q.onnx", rename={}, uncertainty=False)
    assert r2.contract.uncertainty is None


def test_iql_concurrent_update_equals_the_sequential_one() -> None:
    """IQL's two-thread path (V + actor beside Q, one intra-op thread each) computes exactly
    what the sequential path computes with one intra-op thread: same losses, same parameters."""
    from edgewarden.training.distributed import param_digest

    ds = _dataset(4, 2)
    st = obs_stats(ds)
    threads = torch.get_num_threads()
    out = {}
    try:
        for concurrent, n in ((False, 1), (True, 2)):
            torch.set_num_threads(n)
            algo = make_algorithm("iql", 4, 2, st["mean"], st["std"], device="cpu", seed=0,
                                  overrides={**SMALL, "concurrent": concurrent})
            rep = Replay(ds, torch.device("cpu"), 0)
            logs = [_floats(algo.update(rep.sample(SMALL["batch_size"]))) for _ in range(6)]
            assert (algo._pool is not None) == concurrent
            assert torch.get_num_threads() == n  # restored after each update
            out[concurrent] = (logs, param_digest(algo.modules))
    finally:
        torch.set_num_threads(threads)
    assert out[True] == out[False]


def test_iql_critic_first_order_differs_only_in_the_actor() -> None:
    """``order = critic_first`` (d3rlpy's): V and Q are updated exactly as in the joint order
    (both from the step's starting networks); only the actor differs, because its advantage
    comes from the updated V."""
    from edgewarden.training.distributed import param_digest

    ds = _dataset(4, 2)
    st = obs_stats(ds)
    digests = {}
    for order in ("joint", "critic_first"):
        algo = make_algorithm("iql", 4, 2, st["mean"], st["std"], device="cpu", seed=0,
                              overrides={**SMALL, "order": order, "concurrent": False})
        rep = Replay(ds, torch.device("cpu"), 0)
        algo.update(rep.sample(SMALL["batch_size"]))
        digests[order] = {k: param_digest({k: m}) for k, m in algo.modules.items()}
    joint, first = digests["joint"], digests["critic_first"]
    assert [k for k in joint if joint[k] != first[k]] == ["actor", "actor_log_std"]


def test_fused_adam_short_path_equals_torch_adam() -> None:
    from edgewarden.training.algos.base import adam

    torch.manual_seed(0)
    ours = [torch.randn(7, 5, requires_grad=True), torch.randn(5, requires_grad=True)]
    ref = [p.detach().clone().requires_grad_() for p in ours]
    o1, o2 = adam(ours, 3e-4, torch.device("cpu")), torch.optim.Adam(ref, lr=3e-4, fused=True)
    for _ in range(5):
        x = torch.randn(3, 7)
        for ps, o in ((ours, o1), (ref, o2)):
            o.zero_grad(set_to_none=True)
            (x @ ps[0] + ps[1]).tanh().sum().backward()
            o.step()
    assert all(torch.equal(a, b) for a, b in zip(ours, ref, strict=True))
    s1, s2 = o1.state_dict(), o2.state_dict()
    assert all(torch.equal(s1["state"][i][k], s2["state"][i][k]) for i in s2["state"] for k in s2["state"][i])
