"""Policies the gateway runs: the model contract and the ONNX runtime policy.

``OnnxPolicy`` is imported lazily so that importing the contract (training/ does) does
not load onnxruntime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgewarden.gateway.policy.contract import PolicyContract

if TYPE_CHECKING:
    from edgewarden.gateway.policy.onnx_policy import OnnxPolicy

__all__ = ["OnnxPolicy", "PolicyContract"]


def __getattr__(name: str) -> Any:
    if name == "OnnxPolicy":
        from edgewarden.gateway.policy.onnx_policy import OnnxPolicy

        return OnnxPolicy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
