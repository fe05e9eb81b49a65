"""An exported policy run by onnxruntime on a batch, as the gateway runs it: for evaluation
on a twin and for the offline report (no torch needed)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgewarden.gateway.policy.contract import PolicyContract


def load_onnx_policy(path: Path) -> tuple[PolicyContract, Callable[[np.ndarray], np.ndarray]]:
    """(its contract, obs batch → action batch in engineering units)."""
    import onnxruntime as ort

    from edgewarden.gateway.policy.contract import METADATA_KEY

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    contract = PolicyContract.from_json(sess.get_modelmeta().custom_metadata_map[METADATA_KEY])

    def fn(obs: np.ndarray) -> np.ndarray:
        return sess.run(None, {contract.input_name: np.asarray(obs, np.float32)})[0]

    return contract, fn
