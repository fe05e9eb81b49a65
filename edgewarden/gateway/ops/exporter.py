"""The metrics exporter's HTTP side, in a process of its own: no scraper, however many or
however slow, takes the control cycle's interpreter time.

The daemon listens on ``[metrics] host:port`` itself (so a taken port is its own clear
error) and hands the socket to this process, with one end of a ``SOCK_SEQPACKET``
socketpair. Between two cycles, at most every ``push_interval_s``, the daemon renders the
registry once and sends it as one message (a health byte, then the exposition text); the
send never blocks (a full pair drops that push). This process answers every scrape from
the newest message, on one asyncio loop: ``/metrics`` the text, ``/healthz`` 200 while the
newest message says healthy and is recent (a daemon that stopped pushing is unhealthy).

Bounds: at most ``MAX_CONNECTIONS`` open at once (more are closed at once), a request
must arrive whole within ``HEADER_TIMEOUT_S`` and in ``MAX_REQUEST_BYTES``, one request per
connection, and at most ``ANSWERS_PER_S`` answers a second, in the order the requests
arrived (a request that would wait longer than ``MAX_WAIT_S`` is answered 429 at once;
``/healthz`` is never queued, so a scrape flood cannot fail a liveness probe): a scrape
loop gets its turn like anyone else and spends the rest of its time waiting, not
computing. It runs at normal scheduling priority, asks for nice 19 (refused under the
shipped unit's system-call filter, which forbids changing priorities) and runs off the
daemon's pinned CPUs where the machine has others. Only the standard library is imported: it starts in milliseconds.
It exits when the daemon's end of the pair closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import time

MAX_CONNECTIONS = 256
HEADER_TIMEOUT_S = 2.0
MAX_REQUEST_BYTES = 8192
ANSWERS_PER_S = 40.0
MAX_WAIT_S = 1.0
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"  # Prometheus' text format


class Exporter:
    def __init__(self, listener: socket.socket, feed: socket.socket, stale_s: float) -> None:
        self.listener, self.feed, self.stale_s = listener, feed, stale_s
        self.body = b"# no figures from the gateway yet\n"
        self.healthy = False
        self.received = -float("inf")
        self.open = 0
        self.done = asyncio.Event()
        self._next_turn = 0.0  # loop time of the next free answer slot

    def on_feed(self) -> None:
        try:
            msg = self.feed.recv(16 * 1024 * 1024)
        except BlockingIOError:
            return
        except OSError:
            msg = b""
        if not msg:  # the daemon closed its end: it is stopping
            self.done.set()
            return
        self.healthy, self.body, self.received = msg[:1] == b"1", msg[1:], time.monotonic()

    def health(self) -> tuple[bytes, bytes]:
        if time.monotonic() - self.received > self.stale_s:
            return b"503 Service Unavailable", b"unhealthy: the gateway has sent no figures recently\n"
        if not self.healthy:
            return b"503 Service Unavailable", b"unhealthy: no healthy control cycle recently\n"
        return b"200 OK", b"ok\n"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.open >= MAX_CONNECTIONS:
            writer.transport.abort()
            return
        self.open += 1
        try:
            async with asyncio.timeout(HEADER_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            parts = head.split(b"\r\n", 1)[0].split(b" ")
            path = parts[1].split(b"?", 1)[0] if len(parts) == 3 else b""
            busy = path != b"/healthz" and not await self._turn()  # a liveness probe never queues
            if busy:
                status, ctype, body = b"429 Too Many Requests", b"text/plain", b"too many scrapes; retry\n"
            elif len(parts) != 3 or parts[0] not in (b"GET", b"HEAD"):
                status, ctype, body = b"400 Bad Request", b"text/plain", b"GET /metrics or /healthz\n"
            elif path == b"/metrics":
                status, ctype, body = b"200 OK", CONTENT_TYPE, self.body
            elif path == b"/healthz":
                status, body = self.health()
                ctype = b"text/plain; charset=utf-8"
            else:
                status, ctype, body = b"404 Not Found", b"text/plain", b"try /metrics or /healthz\n"
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: " + ctype + b"\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
                         + (body if parts[0] == b"GET" else b""))
            async with asyncio.timeout(HEADER_TIMEOUT_S):
                await writer.drain()
        except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # too slow, too long, or gone: the connection is simply closed
        finally:
            self.open -= 1
            writer.close()
            # collects the connection's own outcome (a reset peer's error), which asyncio
            # would otherwise print as "Future exception was never retrieved"
            with contextlib.suppress(Exception):
                async with asyncio.timeout(HEADER_TIMEOUT_S):
                    await writer.wait_closed()

    async def _turn(self) -> bool:
        """Wait for this request's answer slot (in arrival order); False: it would wait
        longer than MAX_WAIT_S, answer 429 at once."""
        now = asyncio.get_running_loop().time()
        turn = max(now, self._next_turn)
        if turn - now > MAX_WAIT_S:
            return False
        self._next_turn = turn + 1.0 / ANSWERS_PER_S
        await asyncio.sleep(turn - now)
        return True

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.feed.setblocking(False)
        loop.add_reader(self.feed.fileno(), self.on_feed)
        server = await asyncio.start_server(self.serve, sock=self.listener, limit=MAX_REQUEST_BYTES,
                                            backlog=MAX_CONNECTIONS)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.done.set)
        async with server:
            await self.done.wait()


def _step_aside(avoid: set[int]) -> None:
    """Normal priority, niced, and off the daemon's own CPUs where others exist."""
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    with contextlib.suppress(OSError):
        os.nice(19)
    others = set(range(os.cpu_count() or 1)) - avoid  # the daemon's pinning is this process's too: start from all
    if avoid and others:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, others)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="edgewarden's metrics exporter (started by the daemon)")
    ap.add_argument("--listen-fd", type=int, required=True)
    ap.add_argument("--feed-fd", type=int, required=True)
    ap.add_argument("--stale-s", type=float, required=True)
    ap.add_argument("--avoid-cpus", default="")
    args = ap.parse_args(argv)
    _step_aside({int(c) for c in args.avoid_cpus.split(",") if c})
    listener = socket.socket(fileno=args.listen_fd)
    feed = socket.socket(fileno=args.feed_fd)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(Exporter(listener, feed, args.stale_s).run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
