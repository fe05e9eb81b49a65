"""Prometheus metrics, on a registry of the gateway's own (no global state).

The cycle only calls cheap methods (observe/inc/set on pre-bound children); the HTTP
exporter runs in prometheus_client's own thread, so a scrape never stalls a cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from gateway.modes import Mode

_CYCLE_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
_LATENESS_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.cycle_seconds = Histogram("edgewarden_cycle_seconds", "Control cycle work time",
                                       buckets=_CYCLE_BUCKETS, registry=r)
        self.lateness_seconds = Histogram("edgewarden_cycle_lateness_seconds",
                                          "Cycle start lateness against the ideal tick grid",
                                          buckets=_LATENESS_BUCKETS, registry=r)
        self.cycles = Counter("edgewarden_cycles", "Control cycles run", registry=r)
        self.deadline_misses = Counter("edgewarden_deadline_misses", "Cycles that overran their deadline",
                                       registry=r)
        self.trips = Counter("edgewarden_trips", "E-stop trips by reason", ["reason"], registry=r)
        self.soft_alarms = Counter("edgewarden_soft_alarms", "Cycles with a soft-limit alarm", registry=r)
        self.shield_interventions = Counter("edgewarden_shield_interventions",
                                            "Cycles in which the shield changed the policy's action",
                                            registry=r)
        self.audit_records = Gauge("edgewarden_audit_records", "Audit records written", registry=r)
        self.mode = Gauge("edgewarden_mode", "1 for the current mode", ["mode"], registry=r)
        self._mode_children = {m: self.mode.labels(mode=m.name) for m in Mode}
        self.set_mode(Mode.INHIBITED)
        self.server_port: int | None = None
        self._server = None

    def set_mode(self, mode: Mode) -> None:
        for m, child in self._mode_children.items():
            child.set(1.0 if m == mode else 0.0)

    def serve(self, host: str, port: int) -> int:
        """Start the HTTP exporter in its own thread; returns the bound port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        self.server_port = int(server.server_port)
        return self.server_port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class LinkCollector:
    """Per-connection health read at scrape time (never from the cycle's hot path).

    Register with ``Metrics.watch_links(transport.health)``. Exposes
    ``edgewarden_link_up``, ``edgewarden_link_reconnects_total``,
    ``edgewarden_link_rtt_seconds`` and ``edgewarden_link_last_ok_age_seconds``, labelled
    by connection, plus ``edgewarden_link_error_info`` carrying the last error text.
    """

    def __init__(self, health: Callable[[], dict[str, Any]]) -> None:
        self._health = health

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        import math
        import time

        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

        up = GaugeMetricFamily("edgewarden_link_up", "1 while the connection is up", labels=["connection"])
        rec = CounterMetricFamily("edgewarden_link_reconnects", "Reconnects per connection", labels=["connection"])
        rtt = GaugeMetricFamily("edgewarden_link_rtt_seconds", "Last read round-trip time", labels=["connection"])
        age = GaugeMetricFamily("edgewarden_link_last_ok_age_seconds", "Seconds since the last good read",
                                labels=["connection"])
        err = InfoMetricFamily("edgewarden_link_error", "Last error per connection", labels=["connection"])
        now = time.monotonic()
        for name, h in self._health().items():
            up.add_metric([name], 1.0 if h.connected else 0.0)
            rec.add_metric([name], float(h.reconnects))
            rtt.add_metric([name], h.rtt_s)
            age.add_metric([name], now - h.last_ok_mono if math.isfinite(h.last_ok_mono) else math.inf)
            err.add_metric([name], {"error": h.last_error})
        yield from (up, rec, rtt, age, err)


def watch_links(metrics: Metrics, health: Callable[[], dict[str, Any]]) -> LinkCollector:
    """Expose a transport's per-connection health on ``metrics``' registry."""
    collector = LinkCollector(health)
    metrics.registry.register(collector)  # type: ignore[arg-type]
    return collector
