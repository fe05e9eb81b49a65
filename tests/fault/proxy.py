"""A TCP fault proxy for the tests (asyncio, loopback only): the link between the gateway
and a PLC, made to fail the ways real networks do.

It is written apart from the twin's own proxy (edgewarden/simulators/faults.py) so that the tests
do not judge the gateway by a fault model the twin's authors also wrote. Faults:

``pass``        forward both ways
``delay``       deliver every chunk ``delay_s`` later, each way, in order
``blackhole``   keep every socket open, forward nothing (a half-open link)
``silent``      drop the open connections; accept new ones and never answer them
``drop``        abort every open connection once (then ``pass``)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

MODES = ("pass", "delay", "blackhole", "silent")


class FaultProxy:
    def __init__(self, upstream: tuple[str, int], host: str = "127.0.0.1", port: int = 0) -> None:
        self.upstream = upstream
        self.host, self.port = host, port
        self.mode = "pass"
        self.delay_s = 0.0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self.drop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def set(self, mode: str, delay_s: float = 0.0) -> None:
        """Switch the fault; ``silent`` also drops what is open (new connections hang)."""
        if mode not in MODES:
            raise ValueError(f"unknown proxy mode {mode!r}")
        self.mode, self.delay_s = mode, delay_s
        if mode == "silent":
            self.drop()

    def drop(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        mine = [writer]
        self._writers.add(writer)
        self.connections += 1
        try:
            if self.mode == "silent":  # accepted, never answered
                while await reader.read(65536):
                    pass
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            except OSError:
                return
            mine.append(up_writer)
            self._writers.add(up_writer)
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in mine:
                self._writers.discard(w)
                w.transport.abort()
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Forward one direction; a delayed chunk keeps its place in the stream."""
        queue: deque[tuple[float, bytes]] = deque()
        ready = asyncio.Event()

        async def deliver() -> None:
            while True:
                await ready.wait()
                while queue:
                    due, data = queue[0]
                    wait = due - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    queue.popleft()
                    if self.mode != "blackhole":
                        writer.write(data)
                ready.clear()

        sender = asyncio.create_task(deliver())
        try:
            while data := await reader.read(65536):
                if self.mode == "blackhole":
                    continue  # swallowed: the peer sees an open, silent socket
                queue.append((time.monotonic() + (self.delay_s if self.mode == "delay" else 0.0), data))
                ready.set()
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            writer.transport.abort()
