"""Prometheus metrics, on a registry of the gateway's own (no global state).

The cycle only calls cheap methods (observe/inc/set on pre-bound children). The registry
is rendered between two cycles, at most every ``push_interval_s``, and sent to the exporter
process (edgewarden/gateway/ops/exporter.py), which answers the scrapes: no scraper takes the
cycle's interpreter time, however many there are or however slowly they read.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, Info, PlatformCollector,
                               ProcessCollector, generate_latest)

from edgewarden.gateway.logs import get_logger
from edgewarden.gateway.modes import Mode
from edgewarden.gateway.version import build_info

_MAX_PUSH_BYTES = 4 * 2**20  # one push is one SOCK_SEQPACKET message (the send buffer is raised to it)
_CYCLE_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
_LATENESS_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1)
_STAGE_BUCKETS = (0.00001, 0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.25)
# "gc": garbage-collector pauses during the cycle, whichever thread ran them (edgewarden.gateway.timing.GcPauses)
STAGES = ("read", "check", "infer", "shield", "write", "audit", "metrics", "gc")
SHIELD_RULES = ("clipped", "rate_limited", "nonfinite_action", "interlock_conflict")
# trip reasons (the code's part before ':'), initialised to 0 so dashboards and alerts see them
TRIP_REASONS = ("hard_limit", "bad_quality", "bad_value", "rate_of_change", "plc_estop", "operator_estop",
                "comms_loss", "deadline_overrun", "policy_fault", "nonfinite_action", "interlock_conflict",
                "audit_failure", "hold_timeout", "internal_fault")


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
        for reason in TRIP_REASONS:
            self.trips.labels(reason=reason)
        self.soft_alarms = Counter("edgewarden_soft_alarms", "Soft-limit alarms raised", registry=r)
        self.holds = Counter("edgewarden_hold_cycles", "Cycles that held the last action: data not usable "
                             "(no data, stale, frozen) or not read by the cycle's deadline", registry=r)
        self.shield_interventions = Counter("edgewarden_shield_interventions",
                                            "Cycles in which the shield changed the policy's action",
                                            registry=r)
        self.shield_rules = Counter("edgewarden_shield_rule_interventions",
                                    "Shield interventions by rule (clipped, rate_limited, ...)",
                                    ["rule"], registry=r)
        self._rule_children = {rule: self.shield_rules.labels(rule=rule) for rule in SHIELD_RULES}
        self.stage_seconds = Histogram("edgewarden_stage_seconds", "Time spent in each stage of a cycle",
                                       ["stage"], buckets=_STAGE_BUCKETS, registry=r)
        # pre-bound children: the cycle observes without a label lookup
        self.stage = {s: self.stage_seconds.labels(stage=s) for s in STAGES}
        self.model = Info("edgewarden_model", "The policy model in use", registry=r)
        self.reloads = Counter("edgewarden_config_reloads", "Reloads (SIGHUP or the reload command) by result",
                               ["result"], registry=r)
        for result in ("applied", "unchanged", "refused"):
            self.reloads.labels(result=result)
        self.build = Info("edgewarden_build", "The gateway's version and the versions of the libraries it runs on",
                          registry=r)
        self.build.info(build_info())
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, open fds ...
        PlatformCollector(registry=r)  # python_info
        self.last_healthy_mono = -float("inf")  # set by the app on every healthy cycle (/healthz)
        self.healthy_within_s = 2.0
        self.mode = Gauge("edgewarden_mode", "1 for the current mode", ["mode"], registry=r)
        self._mode_children = {m: self.mode.labels(mode=m.name) for m in Mode}
        self.mode_code = Gauge("edgewarden_mode_code", "The current mode as a number: " + ", ".join(
            f"{m.value} {m.name}" for m in Mode), registry=r)
        self.mode_entries = Counter("edgewarden_mode_entries", "Times the gateway entered each mode (FALLBACK: "
                                    "the policy handed control to the fallback; MANUAL: a human took over)",
                                    ["mode"], registry=r)
        self._entry_children = {m: self.mode_entries.labels(mode=m.name) for m in Mode}
        self.set_mode(Mode.INHIBITED)
        self.alarms = Gauge("edgewarden_alarm_active", "1 while an alarm is raised (plc_not_accepting, "
                            "setpoint_mismatch:<action>)", ["alarm"], registry=r)
        self.plc_accepts = Gauge("edgewarden_plc_accepts_setpoints", "1 while the PLC applies the gateway's "
                                 "setpoints, 0 while it does not (NaN without plc_remote_tag/plc_watchdog_tag)",
                                 registry=r)
        self.plc_accepts.set(float("nan"))
        self.authority_band = Gauge("edgewarden_authority_band", "The band (± engineering units) a learned policy "
                                    "acts within around the incumbent's proposal; NaN while the active controller "
                                    "is not a learned policy", ["action"], registry=r)
        self.authority_clips = Counter("edgewarden_authority_clips", "Cycles in which the authority band held a "
                                       "learned policy's proposal", registry=r)
        self.server_port: int | None = None
        self._exporter: subprocess.Popen[bytes] | None = None
        self._exporter_args: list[str] = []
        self._exporter_started = -float("inf")
        self.exporter_restarts = 0
        self._listener: socket.socket | None = None
        self._feed: socket.socket | None = None
        self._push_interval_s = 0.5
        self._pushed_mono = -float("inf")
        self._pushed_healthy = False
        self._push_failed = False
        self.pushes = 0  # renders sent to the exporter
        self.pushes_dropped = 0  # not sent: the exporter was behind (or gone)

    def set_mode(self, mode: Mode) -> None:
        for m, child in self._mode_children.items():
            child.set(1.0 if m == mode else 0.0)
        self.mode_code.set(float(mode.value))

    def entered(self, mode: Mode) -> None:
        """A transition into ``mode`` (pushed to the exporter at the end of this cycle)."""
        self.set_mode(mode)
        self._entry_children[mode].inc()
        self._pushed_mono = -float("inf")

    def known_alarms(self, names: list[str]) -> None:
        """Every alarm that may be raised gets its series at 0 (dashboards see "none", not "no data")."""
        for name in names:
            self.alarms.labels(alarm=name).set(0.0)

    def authority(self, band: dict[str, float], applies: bool) -> None:
        """The band in force per action (NaN for all while no learned policy is active)."""
        for action, value in band.items():
            self.authority_band.labels(action=action).set(value if applies else float("nan"))

    def alarm(self, name: str, raised: bool) -> None:
        self.alarms.labels(alarm=name).set(1.0 if raised else 0.0)

    def shield_rule(self, code: str) -> None:
        """Count one shield intervention under its rule (the code's part before ':')."""
        child = self._rule_children.get(code.split(":", 1)[0])
        if child is not None:
            child.inc()

    def healthy(self) -> bool:
        """Liveness: a healthy cycle (on time, writes accepted) happened recently."""
        return time.monotonic() - self.last_healthy_mono <= self.healthy_within_s

    def serve(self, host: str, port: int, *, push_interval_s: float = 0.5, avoid_cpus: frozenset[int] = frozenset()
              ) -> int:
        """Listen on ``host:port`` and start the exporter process (edgewarden/gateway/ops/exporter.py)
        that answers every scrape from what :meth:`push` sends it; returns the port. The
        daemon keeps the listening socket: an exporter that dies is started again on it."""
        from edgewarden.gateway.errors import ConfigError

        try:
            self._listener = socket.create_server((host, port), backlog=256)
        except OSError as exc:
            raise ConfigError(f"[metrics] cannot listen on {host}:{port}: {exc.strerror or exc} "
                              "(another process on that port? set [metrics] port, or 0 for any free port)") from None
        self.server_port = int(self._listener.getsockname()[1])
        self._push_interval_s = push_interval_s
        self._exporter_args = ["--stale-s", str(max(2.0, 3 * push_interval_s + self.healthy_within_s)),
                               "--avoid-cpus", ",".join(map(str, sorted(avoid_cpus)))]
        self._start_exporter()
        self.push()
        return self.server_port

    def _start_exporter(self) -> None:
        assert self._listener is not None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _MAX_PUSH_BYTES)
        with theirs, contextlib.ExitStack() as on_error:
            on_error.callback(ours.close)
            listen = self._listener.fileno()
            self._exporter = subprocess.Popen(
                [sys.executable, "-m", "edgewarden.gateway.ops.exporter", "--listen-fd", str(listen),
                 "--feed-fd", str(theirs.fileno()), *self._exporter_args],
                pass_fds=(listen, theirs.fileno()), stdin=subprocess.DEVNULL, close_fds=True)
            on_error.pop_all()
        ours.setblocking(False)
        self._feed = ours
        self._exporter_started = time.monotonic()

    def _exporter_alive(self, now: float) -> bool:
        """The exporter runs; one that exited is started again (at most every 5 s) and
        said so in the log once per exit."""
        proc = self._exporter
        if proc is None or proc.poll() is None:
            return proc is not None
        if now - self._exporter_started < 5.0:
            return False
        get_logger("edgewarden.metrics").error("metrics exporter exited: started again", code=proc.returncode)
        self.exporter_restarts += 1
        if self._feed is not None:
            self._feed.close()
            self._feed = None
        try:
            self._start_exporter()
        except OSError as exc:
            self._exporter_started = now  # try again in 5 s
            get_logger("edgewarden.metrics").error("metrics exporter cannot start", error=str(exc))
            return False
        return True

    def push(self, now: float | None = None) -> None:
        """Render the registry and send it to the exporter, at most every push interval
        (called between two cycles: the render's few ms come out of the cycle's slack). A
        send that would block (the exporter is behind) drops this push; nothing here raises."""
        now = time.monotonic() if now is None else now
        if not self._exporter_alive(now) or self._feed is None:
            return
        healthy = self.healthy()
        if now - self._pushed_mono < self._push_interval_s and healthy == self._pushed_healthy:
            return  # (a change of health is pushed at once: /healthz lags by a cycle at most)
        self._pushed_mono, self._pushed_healthy = now, healthy
        try:
            message = (b"1" if healthy else b"0") + generate_latest(self.registry)
            if len(message) > _MAX_PUSH_BYTES:  # one datagram: a registry this large is a bug to see
                raise ValueError(f"the rendered figures are {len(message)} bytes, over {_MAX_PUSH_BYTES}")
            self._feed.send(message)
            self.pushes += 1
        except (BlockingIOError, InterruptedError):
            self.pushes_dropped += 1
        except Exception as exc:  # noqa: BLE001 - metrics never trip the plant; counted and logged once
            self.pushes_dropped += 1
            if not self._push_failed:
                self._push_failed = True
                get_logger("edgewarden.metrics").warning("metrics push failed", error=f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        """Stop the exporter (it exits when the pair closes; killed if it does not)."""
        feed, self._feed = self._feed, None
        if feed is not None:
            feed.close()
        proc, self._exporter = self._exporter, None
        if proc is not None:
            try:
                proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()


class _AtScrape:
    """A collector that reads its figures from ``source()`` when scraped, never from the
    cycle's hot path."""

    def __init__(self, source: Callable[[], Any]) -> None:
        self._source = source

    def describe(self) -> list[Any]:
        return []


def _register(metrics: Metrics, collector: _AtScrape) -> Any:
    metrics.registry.register(collector)  # type: ignore[arg-type]
    return collector


class LinkCollector(_AtScrape):
    """Per-connection health read at scrape time (never from the cycle's hot path).

    Register with ``Metrics.watch_links(transport.health)``. Exposes
    ``edgewarden_link_up``, ``edgewarden_link_reconnects_total``,
    ``edgewarden_link_rtt_seconds`` and ``edgewarden_link_last_ok_age_seconds``, labelled
    by connection, plus ``edgewarden_link_error_info`` carrying the last error text and the state.
    """

    def collect(self) -> Iterator[Any]:
        import math
        import time

        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            InfoMetricFamily,
        )

        up = GaugeMetricFamily("edgewarden_link_up", "1 while the connection is up", labels=["connection"])
        rec = CounterMetricFamily("edgewarden_link_reconnects", "Reconnects per connection", labels=["connection"])
        rtt = GaugeMetricFamily("edgewarden_link_rtt_seconds", "Last read round-trip time", labels=["connection"])
        age = GaugeMetricFamily("edgewarden_link_last_ok_age_seconds", "Seconds since the last good read",
                                labels=["connection"])
        err = InfoMetricFamily("edgewarden_link_error", "Last error and state per connection",
                               labels=["connection"])
        now = time.monotonic()
        for name, h in self._source().items():
            up.add_metric([name], 1.0 if h.connected else 0.0)
            rec.add_metric([name], float(h.reconnects))
            rtt.add_metric([name], h.rtt_s)
            age.add_metric([name], now - h.last_ok_mono if math.isfinite(h.last_ok_mono) else math.inf)
            err.add_metric([name], {"error": h.last_error, "state": getattr(h, "state", "")})
        yield from (up, rec, rtt, age, err)


def watch_links(metrics: Metrics, health: Callable[[], dict[str, Any]]) -> LinkCollector:
    """Expose a transport's per-connection health on ``metrics``' registry."""
    return _register(metrics, LinkCollector(health))


class AuditCollector(_AtScrape):
    """Audit writer queue depth, commit latency and record count, read at scrape time."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        st = self._source()
        yield GaugeMetricFamily("edgewarden_audit_queue_depth", "Audit records handed off, not yet written",
                                value=float(st.pending))
        yield GaugeMetricFamily("edgewarden_audit_commit_latency_seconds", "Last group commit's latency "
                                "(hand-off to fsync)", value=st.last_commit_latency_s)
        yield GaugeMetricFamily("edgewarden_audit_commit_latency_max_seconds", "Longest group commit so far",
                                value=st.max_commit_latency_s)
        yield CounterMetricFamily("edgewarden_audit_records", "Audit records written",
                                  value=float(st.records_written))
        yield CounterMetricFamily("edgewarden_audit_commits", "Group commits (fsyncs)", value=float(st.commits))
        yield CounterMetricFamily("edgewarden_audit_bytes", "Audit bytes written", value=float(st.bytes_written))


def watch_audit(metrics: Metrics, stats: Callable[[], Any]) -> AuditCollector:
    return _register(metrics, AuditCollector(stats))


class CycleCollector(_AtScrape):
    """The cycle's own counters, read at scrape time from its stats (never from the hot
    path): ``edgewarden_write_errors_total``, ``edgewarden_policy_faults_total`` and
    ``edgewarden_ood_inputs_total``."""

    _COUNTERS = (("write_errors", "Writes not acknowledged by the PLC (failed, refused or late)"),
                 ("policy_faults", "Policy inferences that failed"),
                 ("ood_inputs", "Cycles whose inputs were outside the model's training distribution"))

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        st = self._source()
        for name, help_ in self._COUNTERS:
            yield CounterMetricFamily(f"edgewarden_{name}", help_, value=float(getattr(st, name)))


def watch_cycle(metrics: Metrics, stats: Callable[[], Any]) -> CycleCollector:
    return _register(metrics, CycleCollector(stats))


class CertificateCollector(_AtScrape):
    """``edgewarden_certificate_expiry_seconds{key}``: seconds until each certificate the
    config names expires (negative once it has). The files are read at most once a
    minute (the figures are rendered between cycles: no file read there each time), so a
    certificate renewed in place shows within a minute."""

    REREAD_S = 60.0

    def __init__(self, source: Callable[[], Any]) -> None:
        super().__init__(source)
        self._expiries: list[tuple[str, float]] = []
        self._read_mono = -float("inf")

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        if time.monotonic() - self._read_mono >= self.REREAD_S:
            self._read_mono = time.monotonic()
            self._expiries = list(self._source())
        fam = GaugeMetricFamily("edgewarden_certificate_expiry_seconds", "Seconds until a configured certificate "
                                "expires (negative: expired)", labels=["key"])
        now = time.time()
        for key, not_after in self._expiries:
            fam.add_metric([key], not_after - now)
        yield fam


def watch_certificates(metrics: Metrics, expiries: Callable[[], list[tuple[str, float]]]) -> CertificateCollector:
    """``expiries()``: (config key, not-after as a Unix time) per certificate."""
    return _register(metrics, CertificateCollector(expiries))
