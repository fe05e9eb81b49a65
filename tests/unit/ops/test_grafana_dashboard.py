"""The Grafana dashboard in the repo queries only metrics the gateway exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import generate_latest

from gateway.audit.writer import AuditStats
from gateway.io.transport import LinkHealth
from gateway.ops.metrics import Metrics, watch_audit, watch_links

DASHBOARD = Path(__file__).resolve().parents[3] / "docs" / "grafana" / "edgewarden.json"


def exposed() -> set[str]:
    m = Metrics()
    m.model.info({"sha256": "0" * 64, "algorithm": "x", "path": "p"})
    m.reloads.labels(result="applied")
    m.cycle_seconds.observe(0.001)
    m.soft_alarms.inc()
    m.alarm("plc_not_accepting", True)
    watch_links(m, lambda: {"plc1": LinkHealth()})
    watch_audit(m, lambda: AuditStats(records_written=1, bytes_written=1, commits=1, last_commit_latency_s=0.0,
                                      max_commit_latency_s=0.0, pending=0, last_seq=1, durable_seq=1,
                                      segments_created=1))
    text = generate_latest(m.registry).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_every_dashboard_metric_is_exposed() -> None:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = {name for e in exprs for name in re.findall(r"\bedgewarden_[a-z_]+", e)}
    assert len(used) >= 15
    missing = used - exposed()
    assert not missing, missing
    assert all(p["datasource"]["uid"] == "${datasource}" for p in dash["panels"])
