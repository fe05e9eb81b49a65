"""The operator client (``send_command``) leaks nothing when its caller is cancelled while
the connect is still in its thread (the HIL bench stops its status poller that way)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from edgewarden.gateway.ops.control import send_command


@pytest.mark.anyio
async def test_a_cancelled_command_closes_the_socket_its_thread_connects(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(0)
    fillers = []
    while True:  # fill the accept queue: the client's blocking connect then waits for a place
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.setblocking(False)
        try:
            c.connect(str(path))
        except BlockingIOError:
            c.close()
            break
        fillers.append(c)
    try:
        command = asyncio.create_task(send_command(path, {"cmd": "status"}, timeout_s=5.0))
        await asyncio.sleep(0.3)
        assert not command.done()  # waiting in connect
        command.cancel()
        with pytest.raises(asyncio.CancelledError):
            await command
        server.settimeout(5.0)
        accepted = [server.accept()[0] for _ in range(len(fillers) + 1)]  # room: the thread's connect completes
        await asyncio.sleep(0.2)  # its completion reaches the loop
        client_side = accepted[-1]
        client_side.settimeout(5.0)
        assert await asyncio.to_thread(client_side.recv, 1) == b""  # closed by the client, not left open
        for s in accepted:
            s.close()
    finally:
        for c in fillers:
            c.close()
        server.close()
