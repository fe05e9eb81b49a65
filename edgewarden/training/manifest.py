"""The manifest ``MODEL.onnx.json`` beside an exported model: its SHA-256 (what the gateway
pins, written by ``train export``) and the evidence gathered on it since (``train report``
adds the off-policy estimate under ``evidence.off_policy``, which ``model promote`` reads)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from edgewarden.gateway.audit.files import write_file
from edgewarden.gateway.errors import GatewayError
from edgewarden.gateway.policy.onnx_policy import read_manifest
from edgewarden.training.onnx_graph import sha256_file

__all__ = ["record_evidence"]


def record_evidence(model: Path, key: str, evidence: dict[str, Any]) -> Path:
    """Write ``evidence`` under ``evidence.<key>`` of the manifest beside ``model`` (created
    when there is none; a figure that is not finite as null), whole or not at all; a
    manifest the gateway would refuse (another file's hash, not a manifest) is refused
    here too. Returns the manifest's path."""
    path = Path(str(model) + ".json")
    digest = sha256_file(model)
    manifest, problem = read_manifest(model, digest)  # the gateway's own reading of it
    if problem is not None:
        raise GatewayError(f"{model}: {problem}; move the manifest away to write a new one")
    manifest = manifest or {"model": model.name, "sha256": digest}
    found = manifest.setdefault("evidence", {})
    if not isinstance(found, dict):
        raise GatewayError(f"{path}: \"evidence\" is not an object; move the manifest away to write a new one")
    found[key] = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in evidence.items()}
    try:
        write_file(path, (json.dumps(manifest, indent=2, allow_nan=False) + "\n").encode(), 0o644)
    except OSError as e:
        raise GatewayError(f"cannot write {path}: {e.strerror or e}") from None
    return path
