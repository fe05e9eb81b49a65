"""The manifest ``MODEL.onnx.json`` beside an exported model: its SHA-256 (what the gateway
pins, written by ``train export``) and the evidence gathered on it since (``train report``
adds the off-policy estimate under ``evidence.off_policy``, which ``model promote`` reads)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgewarden.gateway.audit.files import write_file
from edgewarden.gateway.errors import GatewayError
from edgewarden.training.onnx_graph import sha256_file

__all__ = ["record_evidence"]


def record_evidence(model: Path, key: str, evidence: dict[str, Any]) -> Path:
    """Write ``evidence`` under ``evidence.<key>`` of the manifest beside ``model`` (created
    when there is none), whole or not at all; a manifest naming another file's hash is
    refused. Returns the manifest's path."""
    path = Path(str(model) + ".json")
    digest = sha256_file(model)
    manifest: dict[str, Any] = {"model": model.name, "sha256": digest}
    if path.exists():
        try:
            manifest = json.loads(path.read_text())
            recorded = str(manifest["sha256"]).strip().lower().removeprefix("sha256:")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise GatewayError(f"{path}: not a model manifest ({e}); move it away to write a new one") from None
        if recorded != digest:
            raise GatewayError(f"{path} names SHA-256 {recorded}, {model.name} has {digest}: the manifest is "
                               "another model's")
    manifest.setdefault("evidence", {})[key] = evidence
    try:
        write_file(path, (json.dumps(manifest, indent=2) + "\n").encode(), 0o644)
    except OSError as e:
        raise GatewayError(f"cannot write {path}: {e.strerror or e}") from None
    return path
