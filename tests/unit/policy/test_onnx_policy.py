"""OnnxPolicy: real models through a real onnxruntime session, and every refusal."""
from __future__ import annotations

import hashlib
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")  # building test models needs the train extra

from edgewarden.gateway.errors import PolicyError  # noqa: E402
from edgewarden.gateway.policy import OnnxPolicy, PolicyContract  # noqa: E402
from edgewarden.gateway.policy.contract import METADATA_KEY  # noqa: E402
from edgewarden.training.onnx_graph import build_linear_policy, build_mlp_policy, write_model  # noqa: E402

OBS = [("T_in", "degC"), ("T_out", "degC"), ("flow", "m3/h")]
ACT = [("valve", "%", 0.0, 100.0), ("pump", "rpm", -50.0, 3000.0)]
N_OBS, N_ACT = len(OBS), len(ACT)


def contract(obs=OBS, act=ACT, **over) -> PolicyContract:
    kw = dict(
        observation_tags=[t for t, _ in obs],
        observation_units=[u for _, u in obs],
        action_tags=[a[0] for a in act],
        action_units=[a[1] for a in act],
        action_low=[a[2] for a in act],
        action_high=[a[3] for a in act],
        algorithm="linear",
        dataset_hash="none",
        training_config={},
    )
    kw.update(over)
    return PolicyContract(**kw)


RNG = np.random.default_rng(1234)
W = RNG.normal(size=(N_ACT, N_OBS)) * 40
B = np.array([50.0, 1000.0])
OFFSET = np.array([20.0, 25.0, 3.0])
SCALE = np.array([0.1, 0.2, 0.5])


def write(tmp_path: Path, data: bytes, name: str = "policy.onnx") -> Path:
    return write_model(tmp_path / name, data)


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    return write(tmp_path, build_linear_policy(contract(), W, B, obs_offset=OFFSET, obs_scale=SCALE))


def load(path: Path, obs=OBS, act=ACT, **kw) -> OnnxPolicy:
    return OnnxPolicy.load(path, expected_obs=obs, expected_act=act, **kw)


def refused(path: Path, *needles: str, obs=OBS, act=ACT, **kw) -> str:
    with pytest.raises(PolicyError) as ei:
        load(path, obs, act, **kw)
    msg = str(ei.value)
    assert str(path) in msg, msg
    for n in needles:
        assert n in msg, f"{n!r} not in {msg!r}"
    assert "\n" not in msg
    return msg


def with_metadata(data: bytes, value: str | None) -> bytes:
    m = onnx.load_from_string(data)
    del m.metadata_props[:]
    if value is not None:
        onnx.helper.set_model_props(m, {METADATA_KEY: value})
    return m.SerializeToString()


# ------------------------------------------------------------------ loads and runs
def test_loads_real_model_and_matches_numpy(model_path):
    p = load(model_path)
    assert p.contract == contract()
    assert p.path == model_path
    assert p.sha256 == hashlib.sha256(model_path.read_bytes()).hexdigest()
    low, high = np.array([a[2] for a in ACT]), np.array([a[3] for a in ACT])
    rng = np.random.default_rng(7)
    clipped = 0
    for _ in range(500):
        obs = OFFSET + rng.normal(size=N_OBS) * 30
        raw = W @ ((obs - OFFSET) * SCALE) + B
        want = np.clip(raw, low, high)
        clipped += int(np.any(raw != want))
        got = p.infer(obs)
        assert got.dtype == np.float64 and got.shape == (N_ACT,)
        # float32 inside the graph: the error bound scales with the size of the terms summed.
        terms = np.abs(W) @ np.abs((obs - OFFSET) * SCALE) + np.abs(B)
        assert np.all(np.abs(got - want) <= 1e-5 * terms), (got, want)
    assert 0 < clipped < 500  # both branches of the clip were exercised


def test_infer_returns_a_fresh_array(model_path):
    p = load(model_path)
    a = p.infer(np.zeros(N_OBS))
    b = p.infer(np.full(N_OBS, 100.0))
    assert not np.array_equal(a, b)
    assert not np.shares_memory(a, b)


def test_infer_rejects_wrong_obs_shape(model_path):
    p = load(model_path)
    with pytest.raises(ValueError, match=r"shape \(4,\), policy expects \(3,\)"):
        p.infer(np.zeros(N_OBS + 1))


def test_sha256_pin_accepted(model_path):
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
    assert load(model_path, sha256=digest).sha256 == digest
    assert load(model_path, sha256="sha256:" + digest.upper()).sha256 == digest


def test_lazy_reexport():
    import edgewarden.gateway.policy as pkg
    from edgewarden.gateway.policy.onnx_policy import OnnxPolicy as Direct

    assert pkg.OnnxPolicy is Direct


# ------------------------------------------------------------------ refusals
def test_refuses_missing_file(tmp_path):
    refused(tmp_path / "nope.onnx", "file not found")


def test_refuses_garbage(tmp_path):
    refused(write(tmp_path, b"this is not a model at all" * 10), "not a loadable ONNX model")


def test_refuses_onnx_without_contract(tmp_path, model_path):
    path = write(tmp_path, with_metadata(model_path.read_bytes(), None), "bare.onnx")
    refused(path, "no 'edgewarden.contract' metadata")


def test_refuses_bad_contract_json(tmp_path, model_path):
    path = write(tmp_path, with_metadata(model_path.read_bytes(), '{"format_version": 9}'), "v9.onnx")
    refused(path, "invalid policy contract", "format_version 9 is not supported")


def test_refuses_tag_name_mismatch(model_path):
    obs = [("T_in", "degC"), ("T_return", "degC"), ("flow", "m3/h")]
    refused(model_path, "configured but not in the model: ['T_return']", "not configured: ['T_out']", obs=obs)


def test_refuses_tag_order_mismatch(model_path):
    refused(model_path, "observation tag order differs", obs=[OBS[0], OBS[2], OBS[1]])


def test_refuses_units_mismatch(model_path):
    act = [("valve", "fraction", 0.0, 100.0), ACT[1]]
    refused(model_path, "action 'valve': model units '%', configured units 'fraction'", act=act)


def test_refuses_bounds_wider_than_configured(model_path):
    act = [ACT[0], ("pump", "rpm", 0.0, 2500.0)]
    refused(
        model_path,
        "action 'pump': model low bound -50 is below the configured low 0",
        "action 'pump': model high bound 3000 is above the configured high 2500",
        act=act,
    )


def test_refuses_graph_with_wrong_n_obs(tmp_path):
    # Graph built for 4 observations, contract (and plant) says 3.
    obs4 = [*OBS, ("level", "m")]
    data = build_linear_policy(contract(obs=obs4), np.ones((N_ACT, 4)), np.zeros(N_ACT))
    path = write(tmp_path, with_metadata(data, contract().to_json()), "n4.onnx")
    refused(path, "input 'obs' has 4 features, the contract has 3 observation tags")


def test_refuses_graph_with_wrong_io_names(tmp_path):
    data = build_linear_policy(contract(input_name="x", output_name="y"), W, B)
    path = write(tmp_path, with_metadata(data, contract().to_json()), "names.onnx")
    refused(path, "input is named 'x', contract says 'obs'", "no output named 'action'")


def test_refuses_graph_with_wrong_dtype(tmp_path):
    h = onnx.helper
    g = h.make_graph(
        [h.make_node("Cast", ["obs"], ["c"], to=onnx.TensorProto.FLOAT),
         h.make_node("Slice", ["c", "st", "en", "ax"], ["action"])],
        "g",
        [h.make_tensor_value_info("obs", onnx.TensorProto.DOUBLE, ["batch", N_OBS])],
        [h.make_tensor_value_info("action", onnx.TensorProto.FLOAT, ["batch", N_ACT])],
        initializer=[onnx.numpy_helper.from_array(np.array([v], np.int64), n)
                     for n, v in (("st", 0), ("en", N_ACT), ("ax", 1))],
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)], ir_version=9)
    h.set_model_props(m, {METADATA_KEY: contract().to_json()})
    path = write(tmp_path, m.SerializeToString(), "f64.onnx")
    refused(path, "input 'obs' has type tensor(double), expected tensor(float)")


def test_refuses_sha256_mismatch_naming_both(model_path):
    actual = hashlib.sha256(model_path.read_bytes()).hexdigest()
    refused(model_path, "SHA-256 mismatch", "pinned " + "0" * 64, "file has " + actual, sha256="0" * 64)


def test_refuses_model_that_fails_warm_up(tmp_path):
    w = np.zeros((N_ACT, N_OBS))
    w[0, 0] = np.inf  # inf * 0 = NaN on the all-zero warm-up observation
    data = build_mlp_policy(contract(), [(w, np.zeros(N_ACT))], allow_non_finite=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning may reach the daemon's log
        refused(write(tmp_path, data), "failed during warm-up", "non-finite action")


def test_an_inf_action_is_refused_without_a_runtime_warning(tmp_path):
    """A graph without the exporter's clip whose output is +inf: refused at warm-up, and
    the check itself prints nothing (numpy would warn on inf · 0)."""
    h = onnx.helper
    g = h.make_graph(
        [h.make_node("Slice", ["obs", "st", "en", "ax"], ["s"]), h.make_node("Add", ["s", "inf"], ["action"])],
        "g",
        [h.make_tensor_value_info("obs", onnx.TensorProto.FLOAT, ["batch", N_OBS])],
        [h.make_tensor_value_info("action", onnx.TensorProto.FLOAT, ["batch", N_ACT])],
        initializer=[*(onnx.numpy_helper.from_array(np.array([v], np.int64), n)
                       for n, v in (("st", 0), ("en", N_ACT), ("ax", 1))),
                     onnx.numpy_helper.from_array(np.full(N_ACT, np.inf, np.float32), "inf")],
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)], ir_version=9)
    h.set_model_props(m, {METADATA_KEY: contract().to_json()})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        refused(write(tmp_path, m.SerializeToString(), "inf.onnx"), "failed during warm-up", "[inf, inf]")


def test_a_model_that_differs_from_its_manifest_is_refused(model_path):
    manifest = model_path.with_name(model_path.name + ".json")
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
    manifest.write_text(json.dumps({"model": model_path.name, "sha256": digest}))
    load(model_path)  # matching manifest: fine, with or without a pin
    manifest.write_text(json.dumps({"model": model_path.name, "sha256": "sha256:" + "ab" * 32}))
    refused(model_path, f"SHA-256 {digest} differs from the one in its manifest policy.onnx.json ({'ab' * 32})")
    manifest.write_text("{not json")
    refused(model_path, "its manifest policy.onnx.json is not a model manifest")
    manifest.unlink()
    load(model_path)  # no manifest: the pin and the signature are the checks


def test_a_model_over_the_size_limit_is_refused_unread(model_path):
    size = model_path.stat().st_size
    refused(model_path, "allowed for it ([policy] max_model_mb", max_bytes=size - 1)
    load(model_path, max_bytes=size)


# ------------------------------------------------------------------ run-time faults
def test_nan_output_raises_policy_error(tmp_path):
    # Finite weights; a large input overflows the hidden layer to +inf in two units and the
    # next layer subtracts them: inf - inf = NaN. The clip (Max/Min) propagates NaN, so the
    # gateway must catch it after the run.
    w1 = np.zeros((2, N_OBS))
    w1[:, 0] = 1e30
    w2 = np.array([[1.0, -1.0], [0.0, 0.0]])
    data = build_mlp_policy(contract(), [(w1, np.zeros(2)), (w2, np.zeros(N_ACT))])
    p = load(write(tmp_path, data))
    p.infer(np.ones(N_OBS))  # finite input, finite output
    with pytest.raises(PolicyError, match=r"produced a non-finite action \[nan"):
        p.infer(np.array([1e20, 0.0, 0.0]))
    p.infer(np.ones(N_OBS))  # the policy object stays usable; the caller decides


def test_onnxruntime_error_becomes_policy_error(model_path):
    p = load(model_path)

    class Broken:
        def run_with_iobinding(self, _binding, _options=None):
            raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : boom\nmore")

    p._session = Broken()
    with pytest.raises(PolicyError, match=r"policy.onnx failed at run time: \[ONNXRuntimeError\] : 1 : FAIL : boom$"):
        p.infer(np.zeros(N_OBS))


def test_direct_construction_is_refused():
    with pytest.raises(TypeError, match="OnnxPolicy.load"):
        OnnxPolicy()


def test_a_contract_that_declares_an_uncertainty_output_the_graph_lacks_is_refused(tmp_path, model_path):
    from edgewarden.gateway.policy.contract import Uncertainty

    c = contract().replaced(
        uncertainty=Uncertainty(method="critic_disagreement", scale=1.0, threshold=5.0))
    path = write(tmp_path, with_metadata(model_path.read_bytes(), c.to_json()), "no_unc.onnx")
    refused(path, "no uncertainty output named 'uncertainty'")


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("threshold", 0.0, "uncertainty.threshold must be > 0"),
    ("scale", -1.0, "uncertainty.scale must be > 0"),
    ("output_name", "action", "is already the graph's input or action output"),
    ("calibration", {"p999": float("nan")}, "uncertainty.calibration is not plain JSON"),
])
def test_an_uncertainty_declaration_that_makes_no_sense_is_refused(field, value, needle):
    d = {**contract().to_dict(), "uncertainty": {"method": "critic_disagreement", "scale": 1.0, "threshold": 5.0,
                                                 field: value}}
    with pytest.raises(PolicyError, match=needle):
        PolicyContract.from_json(json.dumps(d))


def test_a_model_without_uncertainty_keeps_its_contract_bytes(model_path):
    # no "uncertainty" key at all: models exported before it load and hash as they did
    assert '"uncertainty"' not in load(model_path).contract.to_json()
    assert math.isnan(load(model_path).uncertainty)
