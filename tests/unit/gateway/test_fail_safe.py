"""The fail-safe boundary and the heartbeat that vouches for the outputs, on the in-memory
transport (the real servers' side: tests/fault/test_fuzz_peers.py)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from pathlib import Path

import pytest

from edgewarden.gateway.cycle import HEARTBEAT_STOPPED
from edgewarden.gateway.io.memory import MemoryTransport
from edgewarden.gateway.io.tags import Snapshot
from edgewarden.gateway.io.transport import WriteError, WritePlan
from edgewarden.gateway.modes import Mode, ModeRefused
from edgewarden.gateway.safety.fault import internal_fault
from tests.helpers import wait_for
from tests.unit.gateway.test_cycle import action_writes, make_loop, steps


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
