"""A hostile PLC (tests/fault/hostile.py) against the real daemon: the named cases of the
fail-safe issue as regression tests, and the fuzzing harness itself.

The default suite runs a few cases per protocol; ``EDGEWARDEN_FUZZ=1`` (CI's fuzz tier,
``.ci/run``) runs hundreds; ``python -m tests.fault.hostile`` is the soak (docs/safety.md).
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import pytest

from tests.fault.hostile import SAFE, hostile_plant, run
from tests.helpers import wait_for

FUZZ = os.environ.get("EDGEWARDEN_FUZZ") == "1"
SEED = 27


async def _latched_safe(plant, fault: str) -> dict:  # noqa: ANN001
    """ESTOP, the daemon up, the plant in its safe state, the cause on record matching the pattern ``fault``."""
    d = plant.daemon

    async def latched() -> dict:
        st = await d.status()
        return st if st.get("mode") == "ESTOP" else {}

    st = await wait_for(latched, "the e-stop", timeout=10)
    assert d.running, "the daemon exited"
    await wait_for(lambda: plant.applied() == SAFE, "the safe outputs applied at the PLC", timeout=10)
    assert st["last_trip"]["code"] == "comms_loss", st["last_trip"]
    assert re.search(fault, st["last_trip"]["message"]), st["last_trip"]
    return st


@pytest.mark.parametrize(("protocol", "kind", "fault"), [
    # a Read or a Write may be the first reply the hostile server spoils
    ("opcua", "fewer", r"protocol fault: (Read|Write) answered"),
    ("opcua", "more", r"protocol fault: (Read|Write) answered"),
    ("opcua", "none", r"protocol fault: (Read|Write) answered 0 results"),
    ("modbus", "fewer", r"protocol fault: unit 1"),
    # another function code: pymodbus itself may refuse to decode it and close the socket,
    # so the link's last word is then a lost connection: the trip names the link and it
    ("modbus", "function", r"\(plc1: "),
])
@pytest.mark.anyio
async def test_a_malformed_reply_in_auto_ends_latched_and_safe_with_the_cause(tmp_path: Path, protocol: str,
                                                                             kind: str, fault: str) -> None:
    """It used to crash the daemon from AUTO (ValueError, IndexError, struct.error) with no
    safe write and no cause on record."""
    async with hostile_plant(protocol, tmp_path) as plant:
        plant.proxy.hostile(kind, 1.0, random.Random(SEED))
        await _latched_safe(plant, fault)
        plant.proxy.honest()
        async def reset() -> bool:
            return bool((await plant.daemon.cmd("reset", reason="test")).get("ok"))
        if plant.twin.image["watchdog_tripped"]:
            plant.twin.image.write("reset_cmd", True)
        await wait_for(reset, "a reset, once the replies are honest", timeout=15)
        trip = plant.trips()[-1]
        assert trip["code"] == "comms_loss" and re.search(fault, trip["message"])
    assert plant.problems() == []


@pytest.mark.anyio
async def test_the_heartbeat_stops_while_a_modbus_plc_refuses_the_safe_write(tmp_path: Path) -> None:
    """The PLC refuses the setpoint write (exception 2 on FC16) and takes the heartbeat: the
    gateway used to latch ESTOP and keep the heartbeat going, so the PLC applied the last
    setpoints for as long as it liked. Now the heartbeat stops, the PLC's dead-man takes
    over, and only an acknowledged safe write brings it back."""
    async with hostile_plant("modbus", tmp_path) as plant:
        d, twin = plant.daemon, plant.twin
        plant.proxy.refuse_writes_at = {2}  # coolant_flow_sp and feed_flow_sp: one FC16 at 2; the heartbeat is at 10
        st = await wait_for(lambda: _mode(d, "ESTOP"), "the e-stop", timeout=10)
        hb = twin.image["heartbeat"]
        await wait_for(lambda: twin.image["watchdog_tripped"], "the PLC's own dead-man", timeout=10)
        assert plant.applied() == SAFE  # the PLC's safe state, whatever the gateway's setpoints were
        st = await d.status()
        assert "heartbeat_stopped" in st["alarms"], st["alarms"]
        assert "refused the write" in st["links"]["plc1"]["last_error"], st["links"]  # the refusal, named
        assert "no good read or acknowledged write" in st["last_trip"]["message"]
        assert twin.image["heartbeat"] == hb  # not one heartbeat since the refusal was seen
        reply = await d.cmd("reset", reason="test")
        assert not reply["ok"] and ("heartbeat stopped" in reply["error"] or "does not answer" in reply["error"])
        plant.proxy.refuse_writes_at = set()  # the PLC takes the safe outputs again
        await wait_for(lambda: twin.image["heartbeat"] != hb, "the heartbeat, once the safe write is acknowledged")
        st = await d.status()
        assert "heartbeat_stopped" not in st["alarms"]

        async def clear() -> bool:  # the link is fine again: what went wrong is over
            return (await d.status())["links"]["plc1"]["last_error"] == ""

        await wait_for(clear, "last_error cleared after the recovery", timeout=5)
        twin.image.write("reset_cmd", True)

        async def reset() -> bool:
            return bool((await d.cmd("reset", reason="test")).get("ok"))

        await wait_for(reset, "an accepted reset", timeout=10)
    assert plant.problems() == []


async def _mode(d, mode: str) -> dict:  # noqa: ANN001
    st = await d.status()
    return st if st.get("mode") == mode else {}


@pytest.mark.parametrize("protocol", ["modbus", "opcua"])
@pytest.mark.anyio
async def test_fuzz_a_hostile_plc_never_leaves_the_plant_unsafe(tmp_path: Path, protocol: str) -> None:
    """Seeded mutations of every reply kind; after each case: correct values, or latched with
    the safe outputs at the PLC and the cause on record; never an exit; the log verifies."""
    cases = 150 if FUZZ else 12
    report = await run(protocol, SEED, cases, tmp_path)
    print(report.summary())
    assert report.cases == cases
    assert report.failures == [], "\n".join(report.failures)
    assert report.ok, report.summary()
    assert sum(report.mutated.values()) > cases  # the peer really was hostile
