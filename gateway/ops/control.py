"""The operator control socket: a Unix stream socket speaking one JSON object per line.

Request:  {"cmd": "status"|"estop"|"reset"|"start"|"override"|..., "actor": "alice", "reason": "..."}
Response: {"ok": true, "mode": "AUTO", ..., "cid": "..."} or {"ok": false, "error": "why", "cid": "..."}

Two gates. Who may connect is decided by the socket file's permissions (0660: the service
user and its group). Who may *change* anything is decided from the peer's credentials
(SO_PEERCRED, which the kernel fills in and a client cannot forge) against
``[control] allowed_uids`` / ``operators_group``: root and the service's own uid always
may; ``status`` is open to anyone who can connect. A refused command is answered
"permission denied" and reported to ``on_denied`` (the app audits it). The peer's uid and
user name are recorded beside the operator name that every state-changing command must
carry, so each action is on record under a name; every request gets a correlation id
(``cid``) that appears in the reply, the logs and the audit record.
An e-stop is answered only after it has been written to the plant and made durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import pwd
import socket
import struct
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

from gateway.errors import GatewayError

Command = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
_MAX_LINE = 64 * 1024


def peer_credentials(writer: asyncio.StreamWriter) -> tuple[int, int, int] | None:
    """(pid, uid, gid) of the connected process, from the kernel."""
    sock = writer.get_extra_info("socket")
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    return pid, uid, gid


def peer_uid(writer: asyncio.StreamWriter) -> int | None:
    creds = peer_credentials(writer)
    return None if creds is None else creds[1]


def user_name(uid: int | None) -> str:
    if uid is None:
        return "?"
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


class Operators:
    """Who may send state-changing commands, decided on the peer's uid and gid.

    With neither ``allowed_uids`` nor ``group`` configured, everyone who can open the
    socket may (the file's 0660 permissions are the only gate).
    """

    def __init__(self, allowed_uids: list[int] | None = None, group: str | None = None) -> None:
        self.allowed_uids = set(allowed_uids or [])
        self.group = group
        self.open = not self.allowed_uids and group is None

    def refuse(self, uid: int | None, gid: int | None) -> str | None:
        """None when allowed; else the reason."""
        if self.open or uid in (0, os.getuid()) or uid in self.allowed_uids:
            return None
        if uid is not None and self.group is not None:
            try:
                g = grp.getgrnam(self.group)
            except KeyError:
                return f"permission denied: the operators group {self.group!r} does not exist on this host"
            if gid == g.gr_gid or user_name(uid) in g.gr_mem:
                return None
        who = f"uid {uid} ({user_name(uid)})"
        rule = " or ".join(x for x in (f"in group {self.group!r}" if self.group else "",
                                       "listed in [control] allowed_uids" if self.allowed_uids else "") if x)
        return f"permission denied: {who} is not an operator of this gateway (must be {rule})"


class ControlServer:
    def __init__(self, path: Path, commands: dict[str, Command], *, operators: Operators | None = None,
                 on_denied: Callable[[dict[str, Any], str], Awaitable[None]] | None = None) -> None:
        self.path = path
        self._commands = commands
        self._operators = operators or Operators()
        self._on_denied = on_denied
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
            reply = await self._dispatch(line, peer_credentials(writer))
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    async def _dispatch(self, line: bytes, creds: tuple[int, int, int] | None) -> dict[str, Any]:
        cid = uuid.uuid4().hex[:12]
        try:
            request = json.loads(line)
        except json.JSONDecodeError:
            return {"ok": False, "error": "request is not a JSON object on one line", "cid": cid}
        if not isinstance(request, dict):
            return {"ok": False, "error": "request is not a JSON object", "cid": cid}
        cmd = request.get("cmd")
        handler = self._commands.get(cmd) if isinstance(cmd, str) else None
        if handler is None:
            return {"ok": False, "error": f"unknown command {cmd!r}; known: {sorted(self._commands)}", "cid": cid}
        uid, gid = (creds[1], creds[2]) if creds is not None else (None, None)
        request.update(uid=uid, user=user_name(uid), cid=cid)
        if cmd != "status":
            refused = self._operators.refuse(uid, gid)
            if refused is not None:
                if self._on_denied is not None:
                    with contextlib.suppress(GatewayError):
                        await self._on_denied(request, refused)
                return {"ok": False, "error": refused, "cid": cid}
            if not str(request.get("actor") or "").strip():
                return {"ok": False, "error": f"{cmd} needs an operator name (actor)", "cid": cid}
        with structlog.contextvars.bound_contextvars(cid=cid):
            try:
                return {"ok": True, **await handler(request), "cid": cid}
            except GatewayError as exc:
                return {"ok": False, "error": str(exc), "cid": cid}


async def send_command(path: Path, request: dict[str, Any], timeout_s: float = 5.0) -> dict[str, Any]:
    """Client side: one request, one reply."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), timeout_s)
    except (FileNotFoundError, ConnectionRefusedError):
        raise GatewayError(f"no gateway is listening on {path} (is the daemon running? "
                           "is [control] socket the same path?)") from None
    except PermissionError:
        raise GatewayError(f"permission denied on {path}: operators must be in the service's group "
                           "(see docs/operations.md, 'Operators')") from None
    try:
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout_s)
    finally:
        writer.close()
    if not line:
        raise GatewayError(f"the gateway closed {path} without answering")
    return json.loads(line)
