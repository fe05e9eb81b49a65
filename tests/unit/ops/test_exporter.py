"""The metrics exporter process (edgewarden/gateway/ops/exporter.py) behind Metrics.serve:
it answers from the newest push, says unhealthy when the pushes stop, and is started again
when it dies (the daemon keeps the listening socket)."""

from __future__ import annotations

import socket
import time

from edgewarden.gateway.ops.metrics import Metrics


def _get(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def _until(pred, timeout: float = 10.0) -> None:  # noqa: ANN001
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def test_the_exporter_answers_from_pushes_and_comes_back_when_it_dies() -> None:
    m = Metrics()
    m.last_healthy_mono = time.monotonic()
    port = m.serve("127.0.0.1", 0, push_interval_s=0.1)
    try:
        m.cycles.inc(7)
        _until(lambda: (m.push(), b"edgewarden_cycles_total 7.0" in _get(port, "/metrics"))[1])
        assert _get(port, "/healthz").startswith(b"HTTP/1.1 200 OK")
        assert _get(port, "/nope").startswith(b"HTTP/1.1 404")
        m.last_healthy_mono = -1e9  # no healthy cycle lately: pushed at once, /healthz says so
        m.push()
        _until(lambda: _get(port, "/healthz").startswith(b"HTTP/1.1 503"))
        m.last_healthy_mono = time.monotonic()
        m._exporter.kill()  # noqa: SLF001 - the process dies (an OOM kill, say)
        m._exporter.wait()  # noqa: SLF001

        def back() -> bool:
            m.last_healthy_mono = time.monotonic()
            m.push()
            try:
                return _get(port, "/healthz").startswith(b"HTTP/1.1 200 OK")
            except OSError:
                return False

        _until(back, timeout=15)
        assert m.exporter_restarts == 1
    finally:
        m.close()
