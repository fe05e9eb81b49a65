"""The cycle's deadline against asyncua's own cancellation race.

asyncua wraps every service call in ``wait_for2``, which answers a cancellation that
meets the server's answer in the same loop turn with ``CancelledWithResultError``, a
subclass of CancelledError that ``asyncio.timeout`` passes on instead of turning into
TimeoutError. Under load the write deadline hits that turn; it once crashed the daemon.
The race cannot be timed on purpose against a real server, so the client here is a stub
that behaves as asyncua does in it; the real server path is in
tests/integration/test_io_opcua.py.
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest
from wait_for2.impl import CancelledWithResultError

from edgewarden.gateway.config import OpcUaConnection, TagSpec
from edgewarden.gateway.io.opcua.transport import OpcUaTransport
from edgewarden.gateway.io.tags import TagMap
from edgewarden.gateway.io.transport import WriteError, plan_writes


class RacingUaClient:
    """write_attributes that, when cancelled, raises what wait_for2 raises in the race."""

    async def write_attributes(self, nodeids, datavalues, attributeid):  # noqa: ANN001, ANN201
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise CancelledWithResultError(b"answer", False) from None


def _transport() -> tuple[OpcUaTransport, object]:
    specs = {"sp": TagSpec(connection="u", node="ns=2;s=sp", writable=True)}
    tags = TagMap(specs=specs, readable=("sp",), index={"sp": 0})
    t = OpcUaTransport(tags, {"u": OpcUaConnection(url="opc.tcp://127.0.0.1:1", timeout_s=2.0)})
    link = t._links["u"]  # noqa: SLF001 - the stub client stands in for a connected session
    link.client = SimpleNamespace(uaclient=RacingUaClient())
    link.answered_mono = time.monotonic()
    return t, plan_writes(specs, ["sp"])


@pytest.mark.anyio
async def test_a_write_cancelled_in_the_race_is_a_timeout_not_a_crash() -> None:
    t, plan = _transport()
    t0 = time.monotonic()
    with pytest.raises(WriteError) as err:
        await t.write(plan, [1.0], t0 + 0.02)
    assert err.value.outcomes == ["timeout"] and time.monotonic() - t0 < 0.5
    assert t.health()["u"].late == 1


@pytest.mark.anyio
async def test_a_real_cancellation_still_cancels() -> None:
    t, plan = _transport()
    task = asyncio.ensure_future(t.write(plan, [1.0], time.monotonic() + 5.0))
    await asyncio.sleep(0.02)
    task.cancel()  # the daemon stopping: the write must not turn it into a timeout
    with pytest.raises(asyncio.CancelledError):
        await task
