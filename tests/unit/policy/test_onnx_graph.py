"""edgewarden.training.onnx_graph: deterministic, self-contained, contract-carrying ONNX files."""
from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from edgewarden.gateway.policy.contract import METADATA_KEY, PolicyContract  # noqa: E402
from edgewarden.training.onnx_graph import (  # noqa: E402
    IR_VERSION,
    OPSET,
    build_linear_policy,
    build_mlp_policy,
    sha256_file,
    write_model,
)

C = PolicyContract(
    observation_tags=("a", "b", "c"),
    observation_units=("bar", "bar", "degC"),
    action_tags=("u0", "u1"),
    action_units=("%", "%"),
    action_low=(-1.0, 0.0),
    action_high=(1.0, 5.0),
    algorithm="linear",
    dataset_hash="none",
    training_config={"note": "test"},
)
W = np.array([[1.0, -2.0, 0.5], [0.25, 0.0, 3.0]])
B = np.array([0.1, 2.0])


def run(data: bytes, obs: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return s.run(None, {"obs": obs.astype(np.float32)})[0]


def test_export_is_byte_deterministic():
    a = build_linear_policy(C, W, B, obs_offset=[1, 2, 3], obs_scale=[0.5, 0.5, 2])
    b = build_linear_policy(C, W.copy(), B.copy(), obs_offset=np.array([1.0, 2, 3]), obs_scale=[0.5, 0.5, 2])
    assert a == b
    assert a != build_linear_policy(C, W, B + 1e-3)


_REPRO = (
    "import hashlib, numpy as np, sys; sys.path.insert(0, '.');"
    "from tests.unit.policy.test_onnx_graph import C, W, B;"
    "from edgewarden.training.onnx_graph import build_linear_policy;"
    "print(hashlib.sha256(build_linear_policy(C, W, B)).hexdigest())"
)


def test_export_is_deterministic_across_processes():
    here = hashlib.sha256(build_linear_policy(C, W, B)).hexdigest()
    out = subprocess.run([sys.executable, "-c", _REPRO], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == here


def test_model_structure_and_metadata():
    m = onnx.load_from_string(build_linear_policy(C, W, B, obs_offset=[0, 0, 0], obs_scale=[1, 1, 1]))
    assert m.ir_version == IR_VERSION
    assert m.opset_import[0].version == OPSET >= 17
    assert [n.op_type for n in m.graph.node] == ["Sub", "Mul", "Gemm", "Max", "Min"]
    assert [i.name for i in m.graph.input] == ["obs"] and [o.name for o in m.graph.output] == ["action"]
    props = {p.key: p.value for p in m.metadata_props}
    assert PolicyContract.from_json(props[METADATA_KEY]) == C
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer)


def test_linear_without_normalisation_matches_numpy_in_batch():
    obs = np.random.default_rng(0).normal(size=(64, 3)) * 3
    got = run(build_linear_policy(C, W, B), obs)
    want = np.clip(obs @ W.T + B, C.action_low, C.action_high)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_mlp_tanh_head_stays_in_bounds_and_matches_numpy():
    rng = np.random.default_rng(3)
    layers = [(rng.normal(size=(8, 3)), rng.normal(size=8)), (rng.normal(size=(2, 8)), rng.normal(size=2))]
    obs = rng.normal(size=(100, 3)) * 5
    got = run(build_mlp_policy(C, layers, head="tanh"), obs)
    h = np.maximum(obs @ layers[0][0].T + layers[0][1], 0) @ layers[1][0].T + layers[1][1]
    lo, hi = np.array(C.action_low), np.array(C.action_high)
    want = lo + (np.tanh(h) + 1) / 2 * (hi - lo)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.all(got >= lo) and np.all(got <= hi)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"weight": np.ones((2, 4)), "bias": B}, r"layer 0: W has shape \(2, 4\), expected \(out, 3\)"),
        ({"weight": np.ones((3, 3)), "bias": np.ones(3)}, "last layer has 3 outputs, contract has 2 actions"),
        ({"weight": W, "bias": np.ones(3)}, r"layer 0 b has shape \(3,\), expected \(2,\)"),
        ({"weight": np.full((2, 3), np.nan), "bias": B}, "layer 0 W contains non-finite values"),
        ({"weight": W, "bias": B, "obs_scale": [1, 1]}, r"obs_scale has shape \(2,\), expected \(3,\)"),
    ],
)
def test_bad_arguments_refused(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        build_linear_policy(C, **kwargs)


def test_write_model_is_atomic_and_hash_matches(tmp_path):
    data = build_linear_policy(C, W, B)
    path = write_model(tmp_path / "p.onnx", data)
    assert path.read_bytes() == data
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    write_model(path, b"replaced")
    assert path.read_bytes() == b"replaced"
    assert [p.name for p in tmp_path.iterdir()] == ["p.onnx"]  # no temp files left behind
