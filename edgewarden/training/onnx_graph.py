"""Export policies as self-contained, deterministic ONNX files carrying their contract.

The graph is built directly with ``onnx.helper`` (no torch): a policy the gateway runs is
a small feed-forward net, and writing its graph by hand keeps the file byte-identical for
the same inputs, so a shipped model can be checked against the command that made it.

Graph: ``obs`` float32 [batch, n_obs] → (Sub offset, Mul scale) → Gemm (→ Relu → Gemm)*
→ output head → ``action`` float32 [batch, n_act]. The output head is either ``clip``
(Max/Min against the per-action bounds; ONNX ``Clip`` only takes scalar bounds) or
``tanh`` (low + (tanh(y) + 1) / 2 · (high − low), the usual actor squashing). The
contract JSON goes in the model's ``metadata_props`` under ``edgewarden.contract``.

This module imports ``onnx`` at module level: it belongs to the ``train`` extra, and the
CLI imports this module lazily inside the command that exports, so an edge install never
loads it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgewarden.gateway.policy.contract import METADATA_KEY, PolicyContract

__all__ = [
    "OPSET",
    "IR_VERSION",
    "build_linear_policy",
    "build_mlp_policy",
    "sha256_file",
    "write_model",
]

OPSET = 17
# onnxruntime 1.32 reads IR up to 11; 9 is what opset 17 came with and is read by all
# onnxruntime releases the gateway supports.
IR_VERSION = 9
PRODUCER = "edgewarden"


def _f32(name: str, a: np.ndarray | Sequence[float], shape: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.shape != shape:
        raise ValueError(f"{name} has shape {arr.shape}, expected {shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values")
    return arr.astype(np.float32)


def build_mlp_policy(
    contract: PolicyContract,
    layers: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    obs_offset: np.ndarray | None = None,
    obs_scale: np.ndarray | None = None,
    head: Literal["clip", "tanh"] = "clip",
    allow_non_finite: bool = False,
    critics: Sequence[Sequence[tuple[np.ndarray, np.ndarray]]] = (),
) -> bytes:
    """Build a feed-forward policy: ReLU between layers, no activation after the last.

    ``layers`` is ``[(W, b), ...]`` with ``W`` shaped (out, in), applied as ``W @ x + b``
    (torch ``nn.Linear`` layout). The first ``in`` must be ``contract.n_obs`` and the last
    ``out`` ``contract.n_act``. Normalisation ``(obs - obs_offset) * obs_scale`` is applied
    first when given. ``allow_non_finite`` exists for tests that need a faulty model.
    ``critics`` (with ``contract.uncertainty``, the tanh head and normalisation): each
    head's Q layers, same layout, on ``[normalised obs, tanh action]``; the graph's second
    output is their spread (max − min over heads) divided by ``contract.uncertainty.scale``.
    Returns the serialised model; same arguments give the same bytes.
    """
    if not layers:
        raise ValueError("layers is empty")
    if head not in ("clip", "tanh"):
        raise ValueError(f"head must be 'clip' or 'tanh', got {head!r}")
    n_obs, n_act = contract.n_obs, contract.n_act
    check = (lambda name, a, shape: np.asarray(a, np.float32).reshape(shape)) if allow_non_finite else _f32

    inits: list[TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def const(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr, dtype=np.float32), name))
        return name

    unc = contract.uncertainty
    if (unc is None) != (not critics):
        raise ValueError("critics and contract.uncertainty go together")
    if unc is not None and (head != "tanh" or obs_offset is None or obs_scale is None or len(critics) < 2):
        raise ValueError("an uncertainty output needs the tanh head, normalisation and two or more critic heads")
    x = contract.input_name
    if obs_offset is not None:
        off = const("obs_offset", _f32("obs_offset", obs_offset, (n_obs,)))
        nodes.append(helper.make_node("Sub", [x, off], ["obs_centered"], name="normalise_sub"))
        x = "obs_centered"
    if obs_scale is not None:
        sc = const("obs_scale", _f32("obs_scale", obs_scale, (n_obs,)))
        nodes.append(helper.make_node("Mul", [x, sc], ["obs_normalised"], name="normalise_mul"))
        x = "obs_normalised"

    obs_normalised = x

    def mlp(x: str, width: int, layers: Sequence[tuple[np.ndarray, np.ndarray]], prefix: str) -> tuple[str, int]:
        for i, (w, b) in enumerate(layers):
            w = np.asarray(w)
            if w.ndim != 2 or w.shape[1] != width:
                raise ValueError(f"{prefix}layer {i}: W has shape {w.shape}, expected (out, {width})")
            out = w.shape[0]
            wn = const(f"{prefix}l{i}_weight", check(f"{prefix}layer {i} W", w, (out, width)))
            bn = const(f"{prefix}l{i}_bias", check(f"{prefix}layer {i} b", b, (out,)))
            y = f"{prefix}l{i}_out"
            nodes.append(helper.make_node("Gemm", [x, wn, bn], [y], name=f"{prefix}l{i}_gemm", transB=1))
            if i < len(layers) - 1:
                nodes.append(helper.make_node("Relu", [y], [f"{prefix}l{i}_relu"], name=f"{prefix}l{i}_relu"))
                y = f"{prefix}l{i}_relu"
            x, width = y, out
        return x, width

    x, width = mlp(x, n_obs, layers, "")
    if width != n_act:
        raise ValueError(f"last layer has {width} outputs, contract has {n_act} actions")

    low = np.asarray(contract.action_low, dtype=np.float32)
    high = np.asarray(contract.action_high, dtype=np.float32)
    if head == "tanh":
        half = const("action_half_range", (high - low) / 2)
        mid = const("action_mid", (high + low) / 2)
        nodes += [
            helper.make_node("Tanh", [x], ["head_tanh"], name="head_tanh"),
            helper.make_node("Mul", ["head_tanh", half], ["head_scaled"], name="head_scale"),
            helper.make_node("Add", ["head_scaled", mid], ["head_shifted"], name="head_shift"),
        ]
        x = "head_shifted"
    # Clip to the bounds in both heads (tanh rounding can step a hair outside them).
    lo, hi = const("action_low", low), const("action_high", high)
    nodes += [
        helper.make_node("Max", [x, lo], ["head_above_low"], name="clip_low"),
        helper.make_node("Min", ["head_above_low", hi], [contract.output_name], name="clip_high"),
    ]

    outputs = [helper.make_tensor_value_info(contract.output_name, TensorProto.FLOAT, ["batch", n_act])]
    if unc is not None:
        nodes.append(helper.make_node("Concat", [obs_normalised, "head_tanh"], ["q_input"], name="q_input", axis=1))
        qs = []
        for k, q_layers in enumerate(critics):
            q, w_out = mlp("q_input", n_obs + n_act, q_layers, f"q{k}_")
            if w_out != 1:
                raise ValueError(f"critic head {k} has {w_out} outputs, expected 1")
            qs.append(q)
        inv = const("uncertainty_inv_scale", np.asarray([1.0 / unc.scale]))
        nodes += [
            helper.make_node("Concat", qs, ["q_heads"], name="q_heads", axis=1),
            helper.make_node("ReduceMax", ["q_heads"], ["q_max"], name="q_max", axes=[1], keepdims=1),
            helper.make_node("ReduceMin", ["q_heads"], ["q_min"], name="q_min", axes=[1], keepdims=1),
            helper.make_node("Sub", ["q_max", "q_min"], ["q_spread"], name="q_spread"),
            helper.make_node("Mul", ["q_spread", inv], [unc.output_name], name="uncertainty"),
        ]
        outputs.append(helper.make_tensor_value_info(unc.output_name, TensorProto.FLOAT, ["batch", 1]))
    graph = helper.make_graph(
        nodes,
        "edgewarden_policy",
        [helper.make_tensor_value_info(contract.input_name, TensorProto.FLOAT, ["batch", n_obs])],
        outputs,
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER,
        ir_version=IR_VERSION,
    )
    helper.set_model_props(model, {METADATA_KEY: contract.to_json()})
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString(deterministic=True)


def build_linear_policy(
    contract: PolicyContract,
    weight: np.ndarray,
    bias: np.ndarray,
    *,
    obs_offset: np.ndarray | None = None,
    obs_scale: np.ndarray | None = None,
) -> bytes:
    """``action = clip(weight @ ((obs - obs_offset) * obs_scale) + bias, low, high)``.

    ``weight`` is (n_act, n_obs), ``bias`` (n_act,). Same arguments give the same bytes.
    """
    return build_mlp_policy(contract, [(weight, bias)], obs_offset=obs_offset, obs_scale=obs_scale)


def write_model(path: str | os.PathLike[str], model_bytes: bytes) -> Path:
    """Write atomically: temp file in the same directory, fsync, rename, fsync the directory."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # a model is not a secret; mkstemp makes it 0600
            f.write(model_bytes)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return path


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Lower-case hex SHA-256 of a file's bytes (what ``OnnxPolicy.load(sha256=...)`` pins)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
