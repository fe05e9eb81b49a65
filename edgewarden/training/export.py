"""Export a training checkpoint as the one ONNX file the gateway verifies and runs.

The graph is built with :func:`edgewarden.training.onnx_graph.build_mlp_policy` from the actor's
torch weights (no tracing: deterministic bytes, no exporter quirks): observation
normalisation with the dataset's mean and 1/std, the actor's Linear/ReLU layers, the
tanh head mapped onto the action bounds, and a clip. The contract
(edgewarden/gateway/policy/contract.py) carries tag names and units, bounds, algorithm, dataset hash, training
config and the observation statistics (for the gateway's out-of-distribution guard).
Where the checkpoint has a critic ensemble and its calibration (edgewarden/training/uncertainty.py), the graph
has a second output, ``uncertainty``: the critic heads' spread at (s, π(s)) in units of the
data's 99.9th percentile, declared in the contract with its threshold (``uncertainty=False``
leaves it out).

Every export checks itself: the ONNX checker (inside build_mlp_policy), then parity
with the torch actor through onnxruntime on a batch of dataset-range observations:
the normalised action (before the affine map to engineering units) must agree within
``PARITY_TOL`` = 1e-5; the engineering-unit difference is reported too (float32 spacing
at 200 L/min is 1.5e-5, so that number is bounded by rounding, not by the network).
A manifest ``<out>.json`` beside the model holds its SHA-256 (what the gateway pins).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from edgewarden.gateway.audit.files import write_file
from edgewarden.gateway.policy.contract import ObsStats, PolicyContract, Uncertainty
from edgewarden.training.datasets import DatasetMeta
from edgewarden.training.fit import load_checkpoint
from edgewarden.training.onnx_graph import build_mlp_policy, sha256_file, write_model
from edgewarden.training.uncertainty import METHOD, THRESHOLD, critic_of, figure

__all__ = ["GATEWAY_TAGS", "PARITY_TOL", "ExportResult", "export_checkpoint"]

PARITY_TOL = 1e-5
# Env signal name -> gateway tag name where a plant's example config names them differently.
GATEWAY_TAGS: dict[str, dict[str, str]] = {
    "cstr": {"coolant_flow": "coolant_flow_sp", "feed_flow": "feed_flow_sp"},
    "tanks": {"pump1": "pump1_sp", "pump2": "pump2_sp", "valve1": "valve1_sp", "valve2": "valve2_sp"},
    "hvac": {"heating": "heating_sp", "cooling": "cooling_sp", "ventilation": "ventilation_sp"},
}


@dataclass(frozen=True)
class ExportResult:
    path: Path
    sha256: str
    parity_normalized: float
    parity_engineering: float
    contract: PolicyContract


def _uncertainty(ck: dict, threshold: float) -> Uncertainty | None:
    cal = ck.get("uncertainty")
    if not cal or cal.get("method") != METHOD or not cal.get("p999", 0) > 0:
        return None
    return Uncertainty(method=METHOD, scale=float(cal["p999"]), threshold=float(threshold), calibration=cal)


def _contract(ck: dict, meta: DatasetMeta, rename: dict[str, str], unc: Uncertainty | None) -> PolicyContract:
    st = ck["obs_stats"]
    return PolicyContract(
        observation_tags=tuple(rename.get(t, t) for t in meta.observation_tags),
        observation_units=meta.observation_units,
        action_tags=tuple(rename.get(t, t) for t in meta.action_tags),
        action_units=meta.action_units,
        action_low=meta.action_low, action_high=meta.action_high,
        algorithm=ck["algo"], dataset_hash=meta.content_hash,
        training_config={"config": ck["config"], "steps": ck["step"], "seed": ck["seed"],
                         "plant": meta.plant, "behaviour_policy": meta.behaviour_policy},
        obs_stats=ObsStats(min=st["min"], max=st["max"], mean=st["mean"], std=st["std"]),
        uncertainty=unc,
    )


def export_checkpoint(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], *,
                      rename: dict[str, str] | None = None, parity_samples: int = 512, uncertainty: bool = True,
                      uncertainty_threshold: float = THRESHOLD) -> ExportResult:
    algo, ck = load_checkpoint(checkpoint)
    meta = DatasetMeta.from_dict(ck["dataset_meta"])
    if rename is None:
        rename = GATEWAY_TAGS.get(meta.plant, {})
    critic = critic_of(algo)
    unc = _uncertainty(ck, uncertainty_threshold) if uncertainty and critic is not None else None
    contract = _contract(ck, meta, rename, unc)
    actor = algo.actor.eval()
    layers = [(lin.weight.detach().cpu().numpy(), lin.bias.detach().cpu().numpy()) for lin in actor.export_layers()]
    mean = actor.norm.mean.cpu().numpy()
    inv_std = actor.norm.inv_std.cpu().numpy()
    critics = [] if unc is None else [
        [(w.detach()[k].T.cpu().numpy(), b.detach()[k].reshape(-1).cpu().numpy())
         for w, b in zip(critic.weights, critic.biases, strict=True)] for k in range(critic.n)]
    model_bytes = build_mlp_policy(contract, layers, obs_offset=mean, obs_scale=inv_std, head="tanh", critics=critics)

    # Parity: the torch actor vs onnxruntime, on observations spread over the data range.
    rng = np.random.default_rng(0)
    lo, hi = np.asarray(st_min := ck["obs_stats"]["min"]), np.asarray(ck["obs_stats"]["max"])
    span = np.maximum(hi - lo, 1e-3)
    obs = (lo - 0.1 * span + rng.random((parity_samples, len(st_min))) * 1.2 * span).astype(np.float32)
    with torch.no_grad():
        want_n = actor.deterministic(torch.as_tensor(obs)).numpy().astype(np.float64)
    a_lo, a_hi = np.asarray(contract.action_low), np.asarray(contract.action_high)
    want_e = np.clip((a_hi + a_lo) / 2 + want_n * (a_hi - a_lo) / 2, a_lo, a_hi)
    probe = onnx.load_from_string(model_bytes)
    probe.graph.output.append(onnx.helper.make_tensor_value_info("head_tanh", onnx.TensorProto.FLOAT, ["batch", contract.n_act]))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    got = sess.run(None, {contract.input_name: obs})
    got_e, got_n = got[0], got[-1]
    par_n = float(np.max(np.abs(got_n - want_n)))
    par_e = float(np.max(np.abs(got_e - want_e)))
    from edgewarden.gateway.errors import GatewayError
    if not par_n <= PARITY_TOL:
        raise GatewayError(f"export refused: onnxruntime and torch disagree by {par_n:.3g} (> {PARITY_TOL}) "
                           "on the normalised action")
    par_u = None
    if unc is not None:  # the uncertainty output against torch's figure, relative to its size
        want_u = figure(algo, obs) / unc.scale
        par_u = float(np.max(np.abs(got[1][:, 0] - want_u)))
        if not par_u <= PARITY_TOL * max(1.0, float(np.max(np.abs(want_u)))):
            raise GatewayError(f"export refused: onnxruntime and torch disagree by {par_u:.3g} on the "
                               "uncertainty output")
    path = write_model(out, model_bytes)
    digest = sha256_file(path)
    manifest = {"model": path.name, "sha256": digest, "algorithm": contract.algorithm,
                "dataset_hash": contract.dataset_hash, "parity_max_abs_normalized": par_n,
                "parity_max_abs_engineering": par_e,
                **({} if par_u is None else {"parity_max_abs_uncertainty": par_u}),
                "observation_tags": list(contract.observation_tags),
                "action_tags": list(contract.action_tags)}
    write_file(Path(str(path) + ".json"), (json.dumps(manifest, indent=2) + "\n").encode(), 0o644)
    return ExportResult(path=path, sha256=digest, parity_normalized=par_n, parity_engineering=par_e,
                        contract=contract)

