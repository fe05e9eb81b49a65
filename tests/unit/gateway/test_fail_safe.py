"""The fail-safe boundary and the heartbeat that vouches for the outputs, on the in-memory
transport (the real servers' side: tests/fault/test_fuzz_peers.py)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from edgewarden.gateway.cycle import HEARTBEAT_STOPPED
from edgewarden.gateway.io.memory import MemoryTransport
from edgewarden.gateway.io.tags import Snapshot
from edgewarden.gateway.io.transport import WriteError, WritePlan
from edgewarden.gateway.modes import Mode, ModeRefused
from edgewarden.gateway.safety.fault import internal_fault
from tests.helpers import wait_for, write_linear_policy
from tests.unit.gateway.test_cycle import HEALTHY, action_writes, make_loop, steps


class BrokenRead(MemoryTransport):
    """A transport with a bug nobody anticipated: its read raises once ``broken`` is set."""

    broken = False

    async def read(self, snap: Snapshot, deadline: float | None = None) -> None:
        if self.broken:
            {}["no such key"]  # noqa: B018 - the bug: a KeyError deep in a read
        await super().read(snap, deadline)


class RefusesSetpoints(MemoryTransport):
    """A PLC that refuses the setpoint write (as Modbus exception 2) but takes the heartbeat."""

    refuse = False

    async def write(self, plan: WritePlan, values: Sequence[float], deadline: float | None = None) -> None:
        if self.refuse and "coolant_flow_sp" in plan.names:
            raise WriteError("refused", ["ok" if n == "heartbeat" else "failed: ILLEGAL_ADDRESS (2)"
                                         for n in plan.names])
        await super().write(plan, values, deadline)


def test_internal_fault_names_the_stage_the_type_and_where() -> None:
    try:
        [].pop()
    except IndexError as exc:
        code, message = internal_fault("read", exc)
    assert code == "internal_fault:read:IndexError"
    assert message.startswith("IndexError in read: pop from empty list (at ")
    assert "test_fail_safe.py:" in message
    assert "\n" not in message


@pytest.mark.anyio
async def test_an_unanticipated_exception_in_a_stage_trips_writes_safe_and_the_loop_goes_on(tmp_path: Path) -> None:
    loop, t, _ = make_loop(tmp_path, transport_cls=BrokenRead)
    await steps(loop, 1)
    loop.request_start("alice")
    await steps(loop, 3)
    assert loop.modes.mode == Mode.AUTO
    t.broken = True
    stop = asyncio.Event()
    runner = asyncio.create_task(loop.run(stop))
    await wait_for(lambda: loop.stats.cycles >= 5 or runner.done(), "five cycles, each failing in its read")
    assert not runner.done()  # the daemon's loop is still up ...
    assert loop.modes.mode == Mode.ESTOP  # ... and latched
    assert loop.estop.last is not None and loop.estop.last.code == "internal_fault:read:KeyError"
    assert "test_fail_safe.py" in loop.estop.last.message
    assert action_writes(t)[-1] == {"coolant_flow_sp": 200.0, "feed_flow_sp": 0.0}
    assert loop.stats.internal_faults == loop.stats.cycles  # every cycle failed, and was counted
    n = len(action_writes(t))
    await wait_for(lambda: len(action_writes(t)) > n + 2, "safe writes in the failing cycles")  # latched, still written
    assert all(w == {"coolant_flow_sp": 200.0, "feed_flow_sp": 0.0} for w in action_writes(t)[n:])
    t.broken = False
    n = loop.stats.cycles
    await wait_for(lambda: loop.stats.cycles > n + 1, "a good cycle")
    loop.request_reset("alice")  # the fault gone: reset as after any trip, and a separate start
    await wait_for(lambda: loop.modes.mode == Mode.READY, "READY")
    stop.set()
    await asyncio.wait_for(runner, 5)


@pytest.mark.anyio
async def test_an_exception_in_the_audit_hand_off_trips_too(tmp_path: Path) -> None:
    loop, t, audit = make_loop(tmp_path)
    await steps(loop, 1)
    loop.request_start("alice")
    await steps(loop, 2)

    def broken(kind: str, payload: dict) -> int:
        raise TypeError("not JSON serialisable")

    audit.append_owned = broken  # type: ignore[method-assign]
    stop = asyncio.Event()
    runner = asyncio.create_task(loop.run(stop))
    await wait_for(lambda: loop.estop.last is not None, "the trip")
    assert loop.estop.last is not None and loop.estop.last.code == "internal_fault:audit:TypeError"
    assert action_writes(t)[-1] == {"coolant_flow_sp": 200.0, "feed_flow_sp": 0.0}
    stop.set()
    await asyncio.wait_for(runner, 5)


@pytest.mark.anyio
async def test_the_heartbeat_stops_while_the_plc_refuses_the_safe_outputs(tmp_path: Path) -> None:
    loop, t, audit = make_loop(tmp_path, transport_cls=RefusesSetpoints)
    await steps(loop, 1)
    loop.request_start("alice")
    await steps(loop, 2)
    t.refuse = True
    await loop.estop.trip("operator_estop", "test")
    hb = [w["heartbeat"] for w in t.writes if "heartbeat" in w]
    await steps(loop, 5)
    assert [w["heartbeat"] for w in t.writes if "heartbeat" in w] == hb  # not one more heartbeat
    assert loop.outputs.vouching is False and HEARTBEAT_STOPPED in loop.alarms
    records = [p for k, p in audit.records if k == "cycle"]
    assert records[-1]["hb"] is None and records[-1]["written"] == [200.0, 0.0]
    assert records[-1]["ack"][-1].startswith("not_attempted")
    with pytest.raises(ModeRefused, match="not acknowledged the safe outputs"):
        loop.request_reset("alice")
    t.refuse = False  # the PLC takes the safe outputs again: then, and only then, the heartbeat
    await steps(loop, 2)
    assert loop.outputs.vouching is True and HEARTBEAT_STOPPED not in loop.alarms
    assert [w["heartbeat"] for w in t.writes if "heartbeat" in w][-1] > hb[-1]
    assert t.writes[-2] == {"coolant_flow_sp": 200.0, "feed_flow_sp": 0.0} and set(t.writes[-1]) == {"heartbeat"}
    alarms = [p for k, p in audit.records if k == "alarm" and p["alarm"] == HEARTBEAT_STOPPED]
    assert [a["raised"] for a in alarms] == [True, False]
    loop.request_reset("alice")
    assert loop.modes.mode == Mode.INHIBITED


@pytest.mark.anyio
async def test_a_value_beyond_float32_is_bad_not_an_inf_in_the_policy_input(tmp_path: Path) -> None:
    """1.7e308 on a tag without a range used to pass every check and become inf in the
    policy's float32 input (numpy's RuntimeWarning on stderr)."""
    loop, t, _ = make_loop(tmp_path, replace={r"^range = \[0.0, 2.0\]\n": ""})  # CA: no range
    assert loop.settings.tags["CA"].range is None
    await steps(loop, 1)
    loop.request_start("alice")
    await steps(loop, 2)
    t.values["CA"] = 1.7e308  # a double the PLC may serve; no float32 holds it
    await steps(loop, 1)
    assert loop.modes.mode == Mode.ESTOP
    assert loop.estop.last is not None and loop.estop.last.code == "bad_quality:CA", loop.estop.last


@pytest.mark.anyio
async def test_status_claims_no_plc_acceptance_it_did_not_read_this_cycle(tmp_path: Path) -> None:
    """During a blackhole (no data) the gateway used to go on saying the PLC accepted."""
    loop, t, _ = make_loop(tmp_path)
    await steps(loop, 1)
    loop.request_start("alice")
    await steps(loop, 2)
    gauge = "edgewarden_plc_accepts_setpoints"
    assert loop.authority.accepts is True and loop.metrics.registry.get_sample_value(gauge) == 1.0
    t.online = False  # nothing answers: NO_DATA
    await steps(loop, 1)
    assert loop.authority.accepts is None
    assert math.isnan(loop.metrics.registry.get_sample_value(gauge))
    t.online = True
    await steps(loop, 1)
    assert loop.authority.accepts is True and loop.metrics.registry.get_sample_value(gauge) == 1.0


# ---- FALLBACK always has a way out ------------------------------------------------------------
# T = 376 K holds the interlock "T >= 375: feed_flow_sp <= 50": the incumbent proposes a
# feed of 40, the new model 100, which the shield clips every cycle
HOT = {**HEALTHY, "T": 376.0, "feed_flow_sp": 40.0, "feed_flow": 40.0}
INCUMBENT = np.array([100.0, 40.0])


def _runaway(tmp_path: Path) -> Path:
    return write_linear_policy(tmp_path / "runaway.onnx", bias=np.array([100.0, 100.0]))


async def _runaway_loaded(tmp_path: Path, **replace: str) -> tuple:  # noqa: ANN202
    """The incumbent in AUTO at 376 K, a runaway model loaded (it swaps in next cycle):
    (loop, audit, the incumbent's hash, every mode transition so far and to come)."""
    loop, _, audit = make_loop(tmp_path, replace={r"^max_interventions = 20": "max_interventions = 3", **replace},
                               values=HOT, bias=INCUMBENT)
    transitions: list = []
    loop.modes.subscribe(transitions.append)
    await steps(loop, 1)
    loop.request_start("alice")
    await steps(loop, 2)
    good = loop.policy.sha256
    await loop.models.load(_runaway(tmp_path), "alice")
    return loop, audit, good, transitions


async def _until_mode_changes(loop, n: int = 40) -> None:  # noqa: ANN001
    start = loop.modes.mode
    for _ in range(n):
        await loop.step()
        if loop.modes.mode != start:
            return


@pytest.mark.anyio
async def test_a_new_model_that_loses_control_is_rolled_back_and_the_one_before_takes_over(tmp_path: Path) -> None:
    """It used to hand over to the hold fallback, which held the failed model's outputs, and
    the restored controller could hand back only by agreeing with them."""
    loop, audit, good, transitions = await _runaway_loaded(tmp_path)
    await steps(loop, 8)  # swap, three clipped proposals, the rollback, the swap back
    assert loop.policy.sha256 == good and loop.modes.mode == Mode.AUTO
    assert Mode.FALLBACK not in [t.target for t in transitions]
    rollbacks = [p for k, p in audit.records if k == "model_rollback"]
    assert len(rollbacks) == 1 and "automatic" in rollbacks[0]["reason"]
    await steps(loop, 30)  # the restored one is not rolled back to the failed one
    assert loop.policy.sha256 == good and len([1 for k, _ in audit.records if k == "model_rollback"]) == 1


@pytest.mark.anyio
async def test_from_fallback_an_operator_hands_back_or_rolls_back(tmp_path: Path) -> None:
    loop, audit, good, transitions = await _runaway_loaded(
        tmp_path, **{r"^actions = \[": "rollback_window_s = 0.0\nactions = ["})
    await _until_mode_changes(loop)
    assert loop.modes.mode == Mode.FALLBACK  # outside any rollback window: the fallback has control
    status = loop.safety.supervisor.hand_back(time.monotonic())
    assert "interventions" in status["reason"] and "ctl auto" in status["rule"] and status["needed_s"] == 5.0
    loop.request_auto("alice")  # the operator hands control back to the active policy now
    assert loop.modes.mode == Mode.AUTO
    await _until_mode_changes(loop)
    assert loop.modes.mode == Mode.FALLBACK  # it loses control again
    loop.models.rollback("alice", "it keeps running into its bounds")  # the operator names the previous one
    await steps(loop, 1)
    assert loop.policy.sha256 == good and loop.modes.mode == Mode.AUTO
    reasons = [t.reason for t in transitions if t.target == Mode.AUTO]
    assert reasons[-2:] == ["operator hands control back to the active policy",
                            "rolled back to the previous controller: it takes over"]


@pytest.mark.anyio
async def test_an_exception_in_the_healthy_cycle_callback_trips_and_the_loop_goes_on(tmp_path: Path) -> None:
    """The callback applies a staged reload and feeds the systemd watchdog: it ran outside
    the boundary, and an exception there ended the loop (exit 70)."""
    loop, t, _ = make_loop(tmp_path)
    calls = []

    def broken() -> None:
        calls.append(1)
        if len(calls) == 3:
            raise ValueError("a reload that cannot be applied")

    loop.on_healthy_cycle = broken
    await steps(loop, 1)
    loop.request_start("alice")
    stop = asyncio.Event()
    runner = asyncio.create_task(loop.run(stop))
    await wait_for(lambda: loop.estop.last is not None or runner.done(), "the trip")
    assert not runner.done()
    assert loop.estop.last is not None and loop.estop.last.code == "internal_fault:healthy_cycle:ValueError"
    stop.set()
    await asyncio.wait_for(runner, 5)
