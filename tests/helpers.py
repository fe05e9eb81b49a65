"""Builders shared by tests: a config for the CSTR tag map and a real linear ONNX policy."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from edgewarden.data import EXAMPLES
from edgewarden.gateway.example_config import adapt_example
from edgewarden.gateway.policy.contract import PolicyContract
from edgewarden.simulators.harness import free_port, wait_for  # noqa: F401 (the tests import them from here)

EXAMPLE = EXAMPLES / "cstr.toml"

OBS = ("T", "CA", "Tj", "T_sp")
OBS_UNITS = ("K", "mol/L", "K", "K")
ACT = ("coolant_flow_sp", "feed_flow_sp")
ACT_UNITS = ("L/min", "L/min")
ACT_LOW = (0.0, 0.0)
ACT_HIGH = (200.0, 200.0)


def contract(algorithm: str = "test-linear") -> PolicyContract:
    return PolicyContract(
        observation_tags=OBS, observation_units=OBS_UNITS, action_tags=ACT, action_units=ACT_UNITS,
        action_low=ACT_LOW, action_high=ACT_HIGH, algorithm=algorithm, dataset_hash="none",
        training_config={}, input_name="obs", output_name="action",
    )


def write_linear_policy(path: Path, weight: np.ndarray | None = None, bias: np.ndarray | None = None) -> Path:
    """coolant = 100 + 5 (T - T_sp), feed = 100 unless weight/bias say otherwise."""
    from edgewarden.training.onnx_graph import build_linear_policy, write_model

    if weight is None:
        weight = np.array([[5.0, 0.0, 0.0, -5.0], [0.0, 0.0, 0.0, 0.0]])
    if bias is None:
        bias = np.array([100.0, 100.0])
    write_model(path, build_linear_policy(contract(), weight, bias))
    return path


def write_spinning_policy(path: Path, iterations: int = 2**62) -> Path:
    """A valid linear policy whose graph first passes its input through a ``Loop`` of
    ``iterations`` empty steps: by default a model that never finishes warming up."""
    import onnx
    from onnx import TensorProto, helper

    write_linear_policy(path)
    m = onnx.load(str(path))
    g = m.graph
    obs = g.input[0].name
    for node in g.node:
        node.input[:] = ["obs_spun" if x == obs else x for x in node.input]
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Identity", ["v_in"], ["v_out"])],
        "spin",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None)])
    g.initializer.extend([helper.make_tensor("spin_n", TensorProto.INT64, [], [iterations]),
                          helper.make_tensor("spin_go", TensorProto.BOOL, [], [True])])
    g.node.insert(0, helper.make_node("Loop", ["spin_n", "spin_go", obs], ["obs_spun"], body=body))
    onnx.checker.check_model(m)
    path.write_bytes(m.SerializeToString())
    return path


def write_config(tmp: Path, *, policy: Path, url: str = "opc.tcp://127.0.0.1:4840",
                 replace: dict[str, str] | None = None, extra: str = "", example: Path = EXAMPLE,
                 modbus_port: int | None = None) -> Path:
    """An example config (cstr.toml unless ``example``) with paths into ``tmp``, the OPC UA
    url or Modbus port of the twin, and optional regex replacements."""
    return adapt_example(tmp, example=example, opcua_url=url if "opc.tcp" in example.read_text() else None,
                         modbus_port=modbus_port, policy=policy, replace=replace, extra=extra)


async def control_status(sock: Path) -> dict[str, Any]:
    """The gateway's status over its control socket, or {} while it is not answering."""
    from edgewarden.gateway.errors import GatewayError
    from edgewarden.gateway.ops.control import send_command

    with contextlib.suppress(GatewayError, OSError):
        return await send_command(sock, {"cmd": "status"})
    return {}


def write_two_run_log(d: Path, t0: float) -> Path:
    """An audit log of two AUTO runs (cycles 0..9, then 12..16 after a trip) with MANUAL
    cycles between, and the config_load/model_load records that name them."""
    from edgewarden.gateway.audit import AuditWriter

    with AuditWriter(d) as w:
        w.append("config_load", {"gateway": "cstr-1", "obs_tags": ["T", "CA"], "act_tags": ["coolant"],
                                 "obs_units": ["K", "mol/L"], "act_units": ["L/min"],
                                 "t_wall": t0})
        w.append("model_load", {"sha256": "ab" * 32, "t_wall": t0})
        for n in range(20):
            mode = "AUTO" if n < 10 or 12 <= n < 17 else "MANUAL"
            written = [100.0 + n] if mode == "AUTO" else None
            w.append("cycle", {"n": n, "mode": mode, "obs": [350.0 + n, 0.5], "written": written,
                               "verdict": "ok", "t_wall": t0 + 1 + n})
            if n == 10:
                w.append("trip", {"code": "hard_limit:T:high", "t_wall": t0 + 1 + n})
    return d


# The CSTR's feed held at 100 L/min as a [policy.pid] loop (kp = 0, the bias alone)
FEED_HELD = """
[policy.pid.feed_flow_sp]   # a constant feed: kp = 0, the bias alone
pv = "T"
setpoint = 0.0
kp = 0.0
bias = 100.0
"""

# The CSTR's coolant loop as [policy] kind = "pid" runs it (the example's fallback tuning)
CSTR_COOLANT_PID = """
[policy.pid.coolant_flow_sp]
pv = "T"
setpoint = "T_sp"
kp = -20.0
ki = -0.2
bias = 100.0
"""
