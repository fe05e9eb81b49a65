"""Builders shared by tests: a config for the CSTR tag map and a real linear ONNX policy."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gateway.policy.contract import PolicyContract

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cstr.toml"

OBS = ("T", "CA", "Tj", "T_sp")
OBS_UNITS = ("K", "mol/L", "K", "K")
ACT = ("coolant_flow_sp", "feed_flow_sp")
ACT_UNITS = ("L/min", "L/min")
ACT_LOW = (0.0, 0.0)
ACT_HIGH = (200.0, 200.0)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def contract(algorithm: str = "test-linear") -> PolicyContract:
    return PolicyContract(
        observation_tags=OBS, observation_units=OBS_UNITS, action_tags=ACT, action_units=ACT_UNITS,
        action_low=ACT_LOW, action_high=ACT_HIGH, algorithm=algorithm, dataset_hash="none",
        training_config={}, input_name="obs", output_name="action",
    )


def write_linear_policy(path: Path, weight: np.ndarray | None = None, bias: np.ndarray | None = None) -> Path:
    """coolant = 100 + 5 (T - T_sp), feed = 100 unless weight/bias say otherwise."""
    from training.onnx_export import build_linear_policy, write_model

    if weight is None:
        weight = np.array([[5.0, 0.0, 0.0, -5.0], [0.0, 0.0, 0.0, 0.0]])
    if bias is None:
        bias = np.array([100.0, 100.0])
    write_model(path, build_linear_policy(contract(), weight, bias))
    return path


def write_config(tmp: Path, *, policy: Path, url: str = "opc.tcp://127.0.0.1:4840",
                 replace: dict[str, str] | None = None, extra: str = "", example: Path = EXAMPLE,
                 modbus_port: int | None = None) -> Path:
    """An example config (cstr.toml unless ``example``) with paths into ``tmp``, the OPC UA
    url or Modbus port of the twin, and optional regex replacements."""
    text = example.read_text()
    text = text.replace('url = "opc.tcp://127.0.0.1:4840"', f'url = "{url}"')
    if modbus_port is not None:
        text = text.replace("port = 5020", f"port = {modbus_port}")
    text = text.replace('path = "../models/cstr_baseline.onnx"', f'path = "{policy}"')
    text = text.replace('dir = "../var/audit"', f'dir = "{tmp / "audit"}"')
    text = text.replace('socket = "../var/control.sock"', f'socket = "{tmp / "control.sock"}"')
    text = text.replace("port = 9108", "port = 0")
    for pattern, new in (replace or {}).items():
        text, n = re.subn(pattern, new, text, flags=re.M)
        assert n, f"pattern {pattern!r} not found in the example config"
    path = tmp / "gateway.toml"
    path.write_text(text + extra)
    return path


async def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 20.0,
                   interval: float = 0.05) -> Any:
    """Poll ``predicate`` (a plain or async callable) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


async def control_status(sock: Path) -> dict[str, Any]:
    """The gateway's status over its control socket, or {} while it is not answering."""
    from gateway.errors import GatewayError
    from gateway.ops.control import send_command

    with contextlib.suppress(GatewayError, OSError):
        return await send_command(sock, {"cmd": "status"})
    return {}


def write_two_run_log(d: Path, t0: float) -> Path:
    """An audit log of two AUTO runs (cycles 0..9, then 12..16 after a trip) with MANUAL
    cycles between, and the config_load/model_load records that name them."""
    from gateway.audit import AuditWriter

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
