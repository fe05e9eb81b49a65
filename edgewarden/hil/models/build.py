"""Build the bench's extra CSTR models (needs the ``train`` extra): ``python -m edgewarden.hil.models.build``.

``cstr_narrow.onnx``: the shipped proportional policy (same gains, read from its
contract) whose contract claims it was trained only near the nominal point (``obs_stats``:
T_sp 345..355 K). Any setpoint outside that range is out of distribution for it, so the
gateway's OOD guard hands control to the fallback: the bench's "model cannot be trusted
→ fallback" case, and a second valid model for the model-swap scenario.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgewarden.data import MODELS
from edgewarden.gateway.policy.contract import ObsStats, PolicyContract
from edgewarden.training.onnx_graph import build_linear_policy, write_model

HERE = Path(__file__).resolve().parent
SHIPPED = MODELS / "cstr_baseline.onnx"


def narrow() -> bytes:
    meta = ort.InferenceSession(str(SHIPPED)).get_modelmeta().custom_metadata_map
    base = PolicyContract.from_json(meta["edgewarden.contract"])
    kp = float(base.training_config["kp"])
    c0, q0 = float(base.training_config["c0"]), float(base.training_config["q0"])
    stats = ObsStats(min=(330.0, 0.2, 320.0, 345.0), max=(370.0, 0.8, 360.0, 355.0),
                     mean=(350.0, 0.5, 337.0, 350.0), std=(5.0, 0.1, 5.0, 2.0))
    contract = base.replaced(obs_stats=stats, algorithm="proportional-baseline-narrow",
                             training_config={**base.training_config, "obs_stats": "HIL: nominal only"})
    weight = np.array([[kp, 0.0, 0.0, -kp], [0.0, 0.0, 0.0, 0.0]])
    return build_linear_policy(contract, weight, np.array([c0, q0]))


def main() -> None:
    out = write_model(HERE / "cstr_narrow.onnx", narrow())
    print(out)


if __name__ == "__main__":
    main()
