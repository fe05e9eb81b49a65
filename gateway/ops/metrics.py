"""Prometheus metrics, on a registry of the gateway's own (no global state).

The cycle only calls cheap methods (observe/inc/set on pre-bound children); the HTTP
exporter runs in prometheus_client's own thread, so a scrape never stalls a cycle.
"""

from __future__ import annotations

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
