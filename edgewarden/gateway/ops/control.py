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

from edgewarden.gateway.errors import ConfigError, GatewayError
from edgewarden.gateway.ops.requests import MAX_LINE, BadRequest, parse_line, validate

Command = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


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


class _Connection:
    """A client that has connected and not yet sent its request line."""

    __slots__ = ("writer", "evicted")

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.evicted = False


class ControlServer:
    """Serves one request per connection. Bounded so no local client can starve the
    others, nor the cycle: connections are accepted at most ``accept_per_s`` a second; a
    request line must arrive whole within ``request_timeout_s`` and hold at most
    ``MAX_LINE`` bytes; at most ``max_per_uid`` connections of one uid (and
    ``max_connections`` in all) wait for their line, and a new one closes the oldest
    waiting one of the same uid (of the uid holding most, at the global cap). So a client
    that opens connections as fast as it can crowds out only itself: an operator's
    e-stop, sent as soon as it connects, is read and answered."""

    def __init__(self, path: Path, commands: dict[str, Command], *, operators: Operators | None = None,
                 on_denied: Callable[[dict[str, Any], str], Awaitable[None]] | None = None,
                 max_connections: int = 64, max_per_uid: int = 8, request_timeout_s: float = 2.0,
                 accept_per_s: float = 500.0) -> None:
        self.path = path
        self._commands = commands
        self._operators = operators or Operators()
        self._on_denied = on_denied
        self.max_connections = max_connections
        self.max_per_uid = max_per_uid
        self.request_timeout_s = request_timeout_s
        self.accept_per_s = accept_per_s
        self._listener: socket.socket | None = None
        self._acceptor: asyncio.Task[None] | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self._waiting: dict[int | None, dict[_Connection, None]] = {}  # per uid, oldest first
        self._n_waiting = 0
        self.evicted = 0  # connections closed to make room
        self.accept_errors = 0  # accept() failures (EMFILE...): counted, paced, never fatal

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(self.path))
            os.chmod(self.path, 0o660)
            if self._operators.group is not None:  # the operators' group opens it; the service's own group need not
                self._give_to_group(self._operators.group)
            listener.listen(4)  # a short queue: a flood waits in its own connect(), not in ours
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        self._acceptor = asyncio.create_task(self._accept_loop(listener), name="control-accept")

    def _give_to_group(self, group: str) -> None:
        try:
            os.chown(self.path, -1, grp.getgrnam(group).gr_gid)
        except KeyError:
            raise ConfigError(f"[control] operators_group {group!r}: no such group") from None
        except PermissionError:
            raise ConfigError(f"cannot give the control socket {self.path} to the group {group!r}: the service is "
                              "not a member of it (the unit's SupplementaryGroups=)") from None

    async def close(self) -> None:
        tasks = [t for t in (self._acceptor, *self._clients) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._acceptor = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _accept_loop(self, listener: socket.socket) -> None:
        """Accept at most ``accept_per_s`` connections a second (bursts of 4): however fast
        a client connects, the event loop spends a bounded share of its time on it."""
        loop = asyncio.get_running_loop()
        step, burst = 1.0 / self.accept_per_s, 4.0 / self.accept_per_s
        allowed = loop.time()
        while True:
            try:
                conn, _ = await loop.sock_accept(listener)
            except OSError:  # out of descriptors or memory: wait, never spin
                self.accept_errors += 1
                await asyncio.sleep(0.1)
                continue
            task = asyncio.create_task(self._serve_socket(conn))
            self._clients.add(task)
            task.add_done_callback(self._clients.discard)
            allowed = max(allowed + step, loop.time() - burst)
            if allowed > loop.time():
                await asyncio.sleep(allowed - loop.time())

    async def _serve_socket(self, conn: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_unix_connection(sock=conn, limit=MAX_LINE)
        except OSError:
            conn.close()
            return
        await self._serve(reader, writer)

    def _admit(self, uid: int | None, conn: _Connection) -> None:
        mine = self._waiting.setdefault(uid, {})
        if len(mine) >= self.max_per_uid:
            self._evict(uid, f"more than {self.max_per_uid} connections of uid {uid} waiting")
        elif self._n_waiting >= self.max_connections:
            fullest = max(self._waiting, key=lambda u: len(self._waiting[u]))
            self._evict(fullest, f"more than {self.max_connections} connections waiting")
        mine[conn] = None
        self._n_waiting += 1

    def _evict(self, uid: int | None, why: str) -> None:
        conns = self._waiting[uid]
        oldest = next(iter(conns))
        self._release(uid, oldest)
        oldest.evicted = True
        self.evicted += 1
        with contextlib.suppress(Exception):  # best effort: the client may be gone already
            oldest.writer.write(json.dumps({"ok": False, "error": f"closed: {why}"}).encode() + b"\n")
        oldest.writer.close()

    def _release(self, uid: int | None, conn: _Connection) -> None:
        conns = self._waiting.get(uid)
        if conns is not None and conns.pop(conn, 0) is None:
            self._n_waiting -= 1
            if not conns:
                del self._waiting[uid]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            reply = await self._answer(reader, writer)
            if reply is not None:
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except OSError:
            pass  # the client reset or left before its answer: nobody to tell
        finally:
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> dict[str, Any] | None:
        """The reply to the connection's request; None when there is nobody to answer."""
        creds = peer_credentials(writer)
        uid = creds[1] if creds is not None else None
        conn = _Connection(writer)
        self._admit(uid, conn)
        try:
            async with asyncio.timeout(self.request_timeout_s):
                line = await _read_request(reader)
        except TimeoutError:
            return {"ok": False, "error": f"no complete request line within {self.request_timeout_s:g} s"}
        except BadRequest as exc:
            return {"ok": False, "error": str(exc)}
        finally:
            self._release(uid, conn)
        if conn.evicted or line is None:
            return None  # told why when it was closed / the client left
        return await self._dispatch(line, creds)

    async def _dispatch(self, line: bytes, creds: tuple[int, int, int] | None) -> dict[str, Any]:
        cid = uuid.uuid4().hex[:12]
        try:
            request = parse_line(line)
            cmd = request.get("cmd")
            if not isinstance(cmd, str) or cmd not in self._commands:
                raise BadRequest(f"unknown command {cmd!r}; known: {sorted(self._commands)}")
            uid, gid = (creds[1], creds[2]) if creds is not None else (None, None)
            who = {"uid": uid, "user": user_name(uid), "cid": cid}
            if cmd != "status":
                refused = self._operators.refuse(uid, gid)
                if refused is not None:  # before the schema: a non-operator learns nothing more
                    if self._on_denied is not None:
                        with contextlib.suppress(GatewayError):
                            actor = request.get("actor")
                            actor = actor[:128] if isinstance(actor, str) else None
                            await self._on_denied({"cmd": cmd, "actor": actor, **who}, refused)
                    return {"ok": False, "error": refused, "cid": cid}
            request = {**validate(request), **who}
        except BadRequest as exc:
            return {"ok": False, "error": str(exc), "cid": cid}
        with structlog.contextvars.bound_contextvars(cid=cid):
            try:
                return {"ok": True, **await self._commands[cmd](request), "cid": cid}
            except GatewayError as exc:
                return {"ok": False, "error": str(exc), "cid": cid}


async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One request line (a last line without its newline counts); None: the client left."""
    try:
        return await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        return exc.partial or None
    except asyncio.LimitOverrunError:
        raise BadRequest(f"request line longer than {MAX_LINE} bytes") from None


def connect_unix(path: Path, timeout_s: float) -> socket.socket:
    """A connected Unix socket. A blocking connect, bounded by SO_SNDTIMEO: while the
    gateway's accept queue is full (a flood) it waits for a place in it, as the kernel
    allows, where a non-blocking connect would fail at once with EAGAIN."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sec = int(timeout_s)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                        struct.pack("ll", sec, int((timeout_s - sec) * 1e6)))
        sock.connect(str(path))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def _connect(path: Path, timeout_s: float) -> socket.socket:
    """:func:`connect_unix` in a thread. A caller cancelled meanwhile (a status poller
    stopped) does not leak the socket the thread may still connect: it is closed then."""
    connecting = asyncio.ensure_future(asyncio.to_thread(connect_unix, path, timeout_s))
    try:
        return await asyncio.shield(connecting)
    except asyncio.CancelledError:
        connecting.add_done_callback(_close_connected)
        raise


def _close_connected(connecting: asyncio.Future[socket.socket]) -> None:
    if not connecting.cancelled() and connecting.exception() is None:
        connecting.result().close()


async def send_command(path: Path, request: dict[str, Any], timeout_s: float = 5.0) -> dict[str, Any]:
    """Client side: one request, one reply."""
    try:
        sock = await _connect(path, timeout_s)
    except (FileNotFoundError, ConnectionRefusedError):
        raise GatewayError(f"no gateway is listening on {path} (is the daemon running? "
                           "is [control] socket the same path?)") from None
    except PermissionError:
        raise GatewayError(f"permission denied on {path}: operators must be in the service's group "
                           "(see docs/operations.md, 'Operators')") from None
    except BlockingIOError:
        raise GatewayError(f"{path}: the gateway did not accept the connection within {timeout_s:g} s "
                           "(its queue is full: is something flooding the control socket?)") from None
    except OSError as exc:
        raise GatewayError(f"cannot connect to {path}: {exc.strerror or exc}") from None
    try:
        reader, writer = await asyncio.open_unix_connection(sock=sock)
    except BaseException:
        sock.close()
        raise
    try:
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout_s)
    except TimeoutError:
        raise GatewayError(f"the gateway at {path} did not answer within {timeout_s:g} s") from None
    except OSError as exc:
        raise GatewayError(f"the connection to the gateway at {path} failed: {exc.strerror or exc}") from None
    finally:
        writer.close()
    if not line:
        raise GatewayError(f"the gateway closed {path} without answering")
    return json.loads(line)
