"""The Grafana dashboard in the repo queries only metrics the gateway exposes, shows the
mode in colour, marks trips, and says when the gateway is down. (tests/integration/
test_ops_daemon.py checks the same names against a real daemon's scrape.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import generate_latest

from edgewarden.gateway.audit.writer import AuditStats
from edgewarden.gateway.io.transport import LinkHealth
from edgewarden.gateway.cycle import CycleStats
from edgewarden.gateway.modes import Mode
from edgewarden.gateway.ops.metrics import Metrics, watch_audit, watch_cycle, watch_links

DASHBOARD = Path(__file__).resolve().parents[3] / "docs" / "grafana" / "edgewarden.json"


def exposed() -> set[str]:
    m = Metrics()
    m.model.info({"sha256": "0" * 64, "algorithm": "x", "path": "p"})
    m.reloads.labels(result="applied")
    m.cycle_seconds.observe(0.001)
    m.soft_alarms.inc()
    m.alarm("plc_not_accepting", True)
    watch_links(m, lambda: {"plc1": LinkHealth()})
    watch_cycle(m, CycleStats)
    watch_audit(m, lambda: AuditStats(records_written=1, bytes_written=1, commits=1, last_commit_latency_s=0.0,
                                      max_commit_latency_s=0.0, pending=0, last_seq=1, durable_seq=1,
                                      segments_created=1))
    text = generate_latest(m.registry).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def dashboard_metrics() -> set[str]:
    """Every gateway metric the dashboard queries (panels and annotations; ``up`` is Prometheus')."""
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [a["expr"] for a in dash["annotations"]["list"]]
    return {name for e in exprs for name in re.findall(r"\b(?:edgewarden|process)_[a-z_]+", e)}


def test_every_dashboard_metric_is_exposed() -> None:
    used = dashboard_metrics()
    assert len(used) >= 20
    missing = used - exposed()
    assert not missing, missing
    dash = json.loads(DASHBOARD.read_text())
    assert all(p["datasource"]["uid"] == "${datasource}" for p in dash["panels"])


def test_the_dashboard_colours_the_mode_marks_trips_and_shows_a_gateway_down() -> None:
    dash = json.loads(DASHBOARD.read_text())
    panels = {p["title"]: p for p in dash["panels"]}
    mapping = panels["Mode"]["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert {v["text"]: (int(k), v["color"]) for k, v in mapping.items()} == {
        m.name: (m.value, c) for m, c in zip(Mode, ("blue", "yellow", "green", "orange", "purple", "red"), strict=True)}
    assert panels["Mode"]["targets"][0]["expr"].startswith("edgewarden_mode_code")
    assert "edgewarden_trips_total" in dash["annotations"]["list"][0]["expr"]
    assert panels["Gateway scraped (Prometheus up)"]["targets"][0]["expr"].startswith("up{")
    stepped = [t for t, p in panels.items() if len(p["fieldConfig"]["defaults"].get("thresholds", {}).get("steps", [])) > 1]
    assert len(stepped) >= 6, stepped
    assert [v["name"] for v in dash["templating"]["list"]] == ["datasource", "instance"]


def test_metrics_carry_build_process_and_initialised_labels() -> None:
    m = Metrics()
    m.entered(Mode.FALLBACK)
    text = generate_latest(m.registry).decode()
    assert 'edgewarden_build_info{' in text and 'version="' in text and 'onnxruntime="' in text
    assert "process_resident_memory_bytes" in text and "python_info" in text
    for result in ("applied", "unchanged", "refused"):
        assert f'edgewarden_config_reloads_total{{result="{result}"}} 0.0' in text
    assert 'edgewarden_mode_entries_total{mode="FALLBACK"} 1.0' in text
    assert 'edgewarden_mode_entries_total{mode="ESTOP"} 0.0' in text
    assert "edgewarden_mode_code 3.0" in text
    assert "# HELP edgewarden_soft_alarms_total Soft-limit alarms raised" in text
