"""The fault-control endpoint of a running twin: one JSON object per line over TCP.

Requests (one line each; the connection may carry many)::

    {"op": "inject", "kind": "freeze", "target": "T"}
    {"op": "inject", "kind": "noise", "target": "T", "sigma": 0.5, "duration_s": 10}
    {"op": "inject", "kind": "latency", "target": "opcua", "ms": 200}
    {"op": "list"}
    {"op": "clear", "id": 3}          # or {"op": "clear"} for all
    {"op": "status"}                  # plant, mode, scans, overruns

Answers: ``{"ok": true, ...}`` (inject: the fault with its ``id``; list: ``faults``; clear:
``cleared``), or ``{"ok": false, "error": "one line"}``. Bind it to loopback: it has no
authentication (it is a test twin's back door, like a simulator's instructor station).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any

from edgewarden.gateway.errors import TransportError

if TYPE_CHECKING:
    from edgewarden.simulators.twin import Twin

log = logging.getLogger("edgewarden.simulators.fault_control")


class FaultControlServer:
    def __init__(self, twin: Twin, host: str = "127.0.0.1", port: int = 0) -> None:
        self.twin = twin
        self.host = host
        self._requested_port = port
        self.port: int | None = None
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._client, self.host,
                                                      self._requested_port)
        except OSError as exc:
            raise TransportError(f"cannot serve the fault-control endpoint on "
                                 f"{self.host}:{self._requested_port}: {exc.strerror or exc}"
                                 ) from None
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                answer = await self.handle(line)
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(OSError):
                writer.close()

    async def handle(self, line: bytes) -> dict[str, Any]:
        try:
            req = json.loads(line)
            if not isinstance(req, dict):
                raise ValueError("a request is a JSON object")
            op = req.pop("op", None)
            inj = self.twin.faults
            if op == "inject":
                kind = req.pop("kind", None)
                target = req.pop("target", None)
                if not isinstance(kind, str) or not isinstance(target, str):
                    raise ValueError("inject needs 'kind' and 'target'")
                fault = await inj.inject(kind, target, **req)
                return {"ok": True, "fault": fault.describe()}
            if op == "clear":
                fid = req.get("id")
                if fid is not None and (not isinstance(fid, int) or isinstance(fid, bool)):
                    raise ValueError("clear: 'id' must be an integer")
                return {"ok": True, "cleared": await inj.clear(fid)}
            if op == "list":
                return {"ok": True, "faults": inj.list()}
            if op == "status":
                t = self.twin
                return {"ok": True, "plant": t.name, "mode": t.plc.mode, "scans": t.plc.scans,
                        "overruns": t.overruns}
            raise ValueError(f"unknown op {op!r} (inject, clear, list, status)")
        except (ValueError, TypeError) as exc:
            return {"ok": False, "error": str(exc)}


async def request(host: str, port: int, req: dict[str, Any],
                  timeout_s: float = 30.0) -> dict[str, Any]:
    """Send one request to a twin's control endpoint; TransportError if unreachable."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except (OSError, TimeoutError) as exc:
        raise TransportError(f"cannot reach the twin's fault-control endpoint at "
                             f"{host}:{port}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        writer.write(json.dumps(req).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout_s)
    except (OSError, TimeoutError) as exc:
        raise TransportError(f"twin control endpoint {host}:{port}: no answer ({exc})") from None
    finally:
        writer.close()
    if not line:
        raise TransportError(f"twin control endpoint {host}:{port} closed the connection")
    return json.loads(line)
