"""One fault test per e-stop trigger, against the real CSTR twin on loopback.

Each shows: the safe outputs arrive at the twin, the e-stop latches, a reset without a
start does not resume, a start does, and the trip is in the (verified) audit log.
The audit-failure trigger is covered in tests/fault/test_audit_*.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from edgewarden.gateway.app import load_policy
from tests.fault.harness import (
    Bench,
    bench,
    free_port,
    trip_latch_reset_start,
    wait_for,
)


@pytest.mark.anyio
async def test_hard_limit(tmp_path: Path) -> None:
    async with bench(tmp_path) as b:
        await b.start_auto()
        set_T(b, 405.0)  # an exotherm pushes the reactor past the 400 K hard limit

        async def clear() -> None:
            set_T(b, 350.0)
        await trip_latch_reset_start(b, "hard_limit:T:high", clear)


@pytest.mark.anyio
async def test_plc_estop_input(tmp_path: Path) -> None:
    async with bench(tmp_path) as b:
        await b.start_auto()
        b.twin.image.write("estop_cmd", True)  # the hardwired e-stop at the PLC

        async def clear() -> None:
            b.twin.image.write("estop_cmd", False)
            b.twin.image.write("reset_cmd", True)  # the PLC's own reset
            await wait_for(lambda: not b.twin.image["estop"], "the PLC latch to clear")
        await trip_latch_reset_start(b, "plc_estop", clear)


@pytest.mark.anyio
async def test_operator_command(tmp_path: Path) -> None:
    async with bench(tmp_path) as b:
        await b.start_auto()
        reply = await b.cmd("estop", reason="test")
        # acknowledged only after the safe write and the durable trip record
        assert reply["ok"] and reply["mode"] == "ESTOP" and reply["tripped"]
        assert b.twin_setpoints() == (200.0, 0.0)
        assert (await b.cmd("estop"))["tripped"] is False  # runs once

        async def clear() -> None:
            pass
        await trip_latch_reset_start(b, "operator_estop", clear)


@pytest.mark.anyio
async def test_comms_loss(tmp_path: Path) -> None:
    port = free_port()
    async with bench(tmp_path, opcua_port=port,
                     replace={r"^comms_timeout_ms = 1000": "comms_timeout_ms = 300"}) as b:
        await b.start_auto()
        await b.twin.opcua.stop()  # the PLC's server goes away

        async def clear() -> None:
            await b.twin.opcua.start()  # same port; the gateway reconnects by itself
            await wait_for(lambda: b.gateway.loop.transport.health()["plc1"].connected,
                           "the gateway to reconnect", timeout=15)
            def plc_reset_took() -> bool:  # pulse the PLC reset until the latch clears
                if not b.twin.image["remote"]:
                    b.twin.image.write("reset_cmd", True)
                return bool(b.twin.image["remote"])
            await wait_for(plc_reset_took, "the PLC back in REMOTE")
        # the gateway cannot write: the PLC's dead-man timer applies its own safe outputs
        await trip_latch_reset_start(b, "comms_loss", clear, safe_at_twin="applied")


@pytest.mark.anyio
async def test_frozen_sensor(tmp_path: Path) -> None:
    """The link stays live and the value fresh, but it stops moving: the frozen-sensor check
    holds the cycle, and a hold that outlasts comms_timeout_ms trips (no open-loop run)."""
    async with bench(tmp_path, replace={r'^description = "reactor temperature"':
                                        'description = "reactor temperature"\nfreeze_s = 1.0'}) as b:
        await b.start_auto()
        await b.twin.faults.inject("freeze", "T")

        async def clear() -> None:
            await b.twin.faults.clear()
        await trip_latch_reset_start(b, "hold_timeout:frozen:T", clear)


@pytest.mark.anyio
async def test_consecutive_deadline_overruns(tmp_path: Path) -> None:
    async with bench(tmp_path, replace={r"^max_consecutive_overruns = 5": "max_consecutive_overruns = 3"}) as b:
        await b.start_auto()
        loop = b.gateway.loop
        real_read = loop.transport.read

        async def slow_read(snap, deadline=None) -> None:  # noqa: ANN001 - a cycle stalled 1.5 periods
            await asyncio.sleep(loop.period * 1.5)
            await real_read(snap)
        loop.transport.read = slow_read

        async def clear() -> None:
            loop.transport.read = real_read
        await trip_latch_reset_start(b, "deadline_overrun", clear)
        assert loop.stats.deadline_misses >= 3


@pytest.mark.anyio
async def test_policy_fault(tmp_path: Path) -> None:
    from tests.helpers import contract
    from edgewarden.training.onnx_graph import build_mlp_policy, write_model

    async with bench(tmp_path, replace={r'^policy_fault = "fallback"': 'policy_fault = "estop"'}) as b:
        await b.start_auto()
        loop = b.gateway.loop
        good = loop.policy
        # a model that overflows to inf − inf = NaN on real inputs (T ≈ 350 K)
        hidden = (np.array([[3e38, 0, 0, 0], [3e38, 0, 0, 0]]), np.zeros(2))
        head = (np.array([[1.0, -1.0], [0.0, 0.0]]), np.array([0.0, 100.0]))
        bad_path = tmp_path / "bad.onnx"
        write_model(bad_path, build_mlp_policy(contract(), [hidden, head]))
        settings = loop.settings.model_copy(update={"policy": loop.settings.policy.model_copy(
            update={"path": bad_path, "sha256": None})})
        loop.policy = load_policy(settings)

        async def clear() -> None:
            loop.policy = good
        await trip_latch_reset_start(b, "policy_fault", clear)


def set_T(b: Bench, value: float) -> None:
    x = b.twin.plant.state.copy()
    x[1] = value
    b.twin.plant.state = x
