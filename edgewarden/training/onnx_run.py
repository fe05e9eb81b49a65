"""An exported policy run by onnxruntime on a batch, as the gateway runs it: for evaluation
on a twin and for the offline report (no torch needed)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgewarden.gateway.policy.contract import PolicyContract


def load_onnx_policy(path: Path, uncertainties: list[np.ndarray] | None = None,
                     ) -> tuple[PolicyContract, Callable[[np.ndarray], np.ndarray]]:
    """(its contract, obs batch → action batch in engineering units). With ``uncertainties``,
    each call appends the batch's uncertainty output there (the model must have one)."""
    import onnxruntime as ort

    from edgewarden.gateway.policy.contract import METADATA_KEY

    from edgewarden.gateway.errors import PolicyError

    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own pybind exception types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PolicyError(f"policy {str(path)!r}: not a loadable ONNX model ({first})") from None
    meta = sess.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in meta:
        raise PolicyError(f"policy {str(path)!r} carries no contract (export it with edgewarden train export)")
    contract = PolicyContract.from_json(meta[METADATA_KEY])

    names = [contract.output_name]
    if uncertainties is not None:
        if contract.uncertainty is None:
            raise PolicyError(f"policy {str(path)!r} has no uncertainty output (export it from a checkpoint "
                              "with a critic ensemble: iql, td3bc, cql)")
        names.append(contract.uncertainty.output_name)

    def fn(obs: np.ndarray) -> np.ndarray:
        out = sess.run(names, {contract.input_name: np.asarray(obs, np.float32)})
        if uncertainties is not None:
            uncertainties.append(out[1][:, 0].copy())
        return out[0]

    return contract, fn
