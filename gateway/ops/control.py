"""The operator control socket: a Unix stream socket speaking one JSON object per line.

Request:  {"cmd": "status"|"estop"|"reset"|"start", "actor": "alice", "reason": "..."}
Response: {"ok": true, "mode": "AUTO", ...} or {"ok": false, "error": "why"}

Who may connect is decided by the socket file's permissions (0660: the service user and
its group). The peer's uid (SO_PEERCRED) is recorded beside the operator name that
every state-changing command must carry, so each action is on record under a name.
An e-stop is answered only after it has been written to the plant and made durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from gateway.errors import GatewayError

Command = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
_MAX_LINE = 64 * 1024


def peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


class ControlServer:
    def __init__(self, path: Path, commands: dict[str, Command]) -> None:
        self.path = path
        self._commands = commands
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=_MAX_LINE)
        os.chmod(self.path, 0o660)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            reply = await self._dispatch(line, peer_uid(writer))
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    async def _dispatch(self, line: bytes, uid: int | None) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except json.JSONDecodeError:
            return {"ok": False, "error": "request is not a JSON object on one line"}
        if not isinstance(request, dict):
            return {"ok": False, "error": "request is not a JSON object"}
        cmd = request.get("cmd")
        handler = self._commands.get(cmd) if isinstance(cmd, str) else None
        if handler is None:
            return {"ok": False, "error": f"unknown command {cmd!r}; known: {sorted(self._commands)}"}
        if cmd != "status" and not str(request.get("actor") or "").strip():
            return {"ok": False, "error": f"{cmd} needs an operator name (actor)"}
        request["uid"] = uid
        try:
            return {"ok": True, **await handler(request)}
        except GatewayError as exc:
            return {"ok": False, "error": str(exc)}


async def send_command(path: Path, request: dict[str, Any], timeout_s: float = 5.0) -> dict[str, Any]:
    """Client side: one request, one reply."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), timeout_s)
    except (FileNotFoundError, ConnectionRefusedError):
        raise GatewayError(f"no gateway is listening on {path} (is the daemon running? "
                           "is [control] socket the same path?)") from None
    except PermissionError:
        raise GatewayError(f"permission denied on {path}: operators must be in the service's group") from None
    try:
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout_s)
    finally:
        writer.close()
    if not line:
        raise GatewayError(f"the gateway closed {path} without answering")
    return json.loads(line)
