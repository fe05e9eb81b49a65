"""The safety envelope against network faults, through the tests' own TCP fault proxy,
between the real daemon (a subprocess) and the CSTR twin, for OPC UA (poll, subscribe)
and Modbus: ESTOP within comms_timeout_ms + one cycle of the fault's start (from the
audit log's timestamps), whatever the library's request timeout (2 s for OPC UA here);
the safe write attempted and recorded with what the device acknowledged; the operator
channel answering throughout; no return to control without a reset; no record that
claims an acknowledged write the link could not have carried; the last acknowledged
write is what the twin holds; the log verifies.

A short version runs by default; the whole matrix (tests/fault/netfaults.py, the table
in docs/safety.md) with EDGEWARDEN_SLOW=1.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from tests.fault.netfaults import FAULTS, LINKS, NOTHING_ACKED, CaseResult, run_case

SHORT = [("opcua-poll", "blackhole"), ("opcua-subscribe", "silent-accept"), ("modbus", "delay-2s")]
FULL = [c for c in itertools.product(LINKS, FAULTS) if c not in SHORT]


def check(r: CaseResult) -> None:
    assert r.audit_ok, "the audit log does not verify"
    assert r.status_answers == r.status_asked, f"status answered {r.status_answers} of {r.status_asked}"
    assert r.false_acks == 0, f"{r.false_acks} records claim an acknowledged write during the fault"
    assert not r.resumed_without_reset, "control resumed without an operator reset"
    if r.fault == "drop":  # transient: a reconnect may beat the comms timeout
        assert r.estop_ms is None or r.estop_ms <= r.budget_ms, r
    else:
        assert r.trip_code == "comms_loss", r
        assert r.estop_ms is not None and r.estop_ms <= r.budget_ms, \
            f"ESTOP {r.estop_ms} ms after the fault, budget {r.budget_ms} ms"
        assert len(r.safe_ack) == 3, r.safe_ack  # two actions and the heartbeat, each with its outcome
        if r.fault in NOTHING_ACKED:
            assert "ok" not in r.safe_ack, r.safe_ack
    assert r.recovery_ms is not None, "no fresh data within 20 s of the fault clearing"
    assert r.last_acked is not None and tuple(r.last_acked) == r.twin_setpoints, \
        f"the log's last acknowledged write {r.last_acked} is not what the twin holds {r.twin_setpoints}"


@pytest.mark.parametrize(("link", "fault"), SHORT, ids=[f"{a}-{b}" for a, b in SHORT])
@pytest.mark.anyio
async def test_network_fault(tmp_path: Path, link: str, fault: str) -> None:
    check(await run_case(tmp_path, link, fault))


@pytest.mark.slow
@pytest.mark.parametrize(("link", "fault"), FULL, ids=[f"{a}-{b}" for a, b in FULL])
@pytest.mark.anyio
async def test_network_fault_matrix(tmp_path: Path, link: str, fault: str) -> None:
    check(await run_case(tmp_path, link, fault))
