"""The daemon as systemd runs it: a subprocess with NOTIFY_SOCKET, against the CSTR twin.

READY once up, WATCHDOG=1 at the right rhythm and not while the process is stopped
(SIGSTOP), a SIGHUP reload that is applied and one that is refused, a /metrics scrape with
every metric the issue lists and values that move, /healthz, the operator CLI, and
SIGTERM: STOPPING, safe outputs at the twin, exit 0, audit log verified.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from edgewarden.data import MODELS
from edgewarden.gateway.audit.verify import iter_records, verify
from edgewarden.simulators.twin import Twin
from tests.helpers import control_status, wait_for, write_config

SHIPPED = MODELS / "cstr_baseline.onnx"
SAFE = (200.0, 0.0)  # coolant_flow_sp, feed_flow_sp

# every metric issue 9 lists, by its exposed name
METRICS = [
    "edgewarden_cycle_seconds_bucket", "edgewarden_cycle_lateness_seconds_bucket",
    *(f'edgewarden_stage_seconds_count{{stage="{s}"}}' for s in ("read", "check", "infer", "shield", "write",
                                                                "audit")),
    "edgewarden_deadline_misses_total", 'edgewarden_mode{mode="AUTO"}', 'edgewarden_trips_total{reason="hard_limit"}',
    'edgewarden_shield_rule_interventions_total{rule="clipped"}', 'edgewarden_link_up{connection="plc1"}',
    'edgewarden_link_reconnects_total{connection="plc1"}', "edgewarden_audit_queue_depth",
    "edgewarden_audit_commit_latency_seconds", "edgewarden_model_info{", "edgewarden_cycles_total",
    "edgewarden_audit_records_total", "edgewarden_mode_code", 'edgewarden_mode_entries_total{mode="AUTO"} 1.0',
    "edgewarden_write_errors_total", "edgewarden_build_info{", "process_resident_memory_bytes",
    'edgewarden_config_reloads_total{result="refused"} 0.0',
]


class NotifyRx:
    """The systemd side of sd_notify: a datagram socket; records (time, message)."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[tuple[float, str]] = []

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 4096)
            self.messages.append((time.monotonic(), data.decode()))

    def times(self, key: str, since: float = 0.0) -> list[float]:
        return [t for t, m in self.messages if key in m.splitlines() and t >= since]


status = control_status


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def sample(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} ([0-9.e+-]+|NaN|\+Inf)$", text, flags=re.M)
    assert m, f"{name} not in the scrape"
    return float(m.group(1))


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgewarden.gateway.cli", *args], capture_output=True, text=True, timeout=30)


async def scenario(tmp: Path) -> None:
    async with Twin("cstr", opcua=("127.0.0.1", 0), modbus=None, watchdog_ms=500) as twin:
        config = write_config(tmp, policy=SHIPPED, url=twin.opcua_url,
                              replace={r"^cycle_hz = 10.0": "cycle_hz = 20.0",
                                       # not a deadline test: a loaded CI box must not trip it
                                       r"^max_consecutive_overruns = 5": "max_consecutive_overruns = 1000"})
        sock = tmp / "control.sock"
        rx = NotifyRx(tmp / "notify")
        rx_task = asyncio.create_task(rx.run())
        env = {**os.environ, "NOTIFY_SOCKET": str(tmp / "notify"), "EDGEWARDEN_LOGGING__FORMAT": "json"}
        log = tmp / "gateway.log"
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "edgewarden.gateway.cli", "run", "--config", str(config), stdout=out, stderr=out, env=env)
        try:
            # READY=1 only once up: the control socket already answers when it arrives
            await wait_for(lambda: rx.times("READY=1"), "READY=1")
            assert (await status(sock)).get("ok"), "READY before the control socket answered"

            # WATCHDOG=1 after healthy cycles: at most every 0.1 s, at 20 Hz about every 0.1 s
            await asyncio.sleep(1.5)
            t0 = rx.times("READY=1")[0]
            wd = rx.times("WATCHDOG=1", since=t0 + 0.3)
            gaps = [b - a for a, b in zip(wd, wd[1:])]
            assert len(wd) >= 8, wd
            assert min(gaps) >= 0.09 and max(gaps) < 1.0, gaps

            # a stopped process sends no WATCHDOG (systemd would kill and restart it)
            proc.send_signal(signal.SIGSTOP)
            stopped = time.monotonic()
            await asyncio.sleep(0.6)
            assert not rx.times("WATCHDOG=1", since=stopped + 0.05)
            proc.send_signal(signal.SIGCONT)
            await wait_for(lambda: rx.times("WATCHDOG=1", since=stopped + 0.6), "WATCHDOG=1 after SIGCONT")

            await wait_for(lambda: status(sock), "status")
            if twin.image["watchdog_tripped"]:  # it fired: the gateway says so, and the PLC's reset clears it
                async def refused() -> bool:
                    return (await status(sock)).get("plc_accepts") is False
                await wait_for(refused, "the gateway to see the PLC refuse its setpoints")
                r = await asyncio.to_thread(cli, "status", "--socket", str(sock))
                assert "accepts gateway setpoints: NO" in r.stdout, r.stdout
                twin.image.write("reset_cmd", True)
            await wait_for(lambda: twin.image["remote"], "the PLC in REMOTE")
            if (await status(sock)).get("mode") == "ESTOP":
                # the stop hit inside a cycle: a cycle that long leaves the next comms check
                # past the budget, so the gateway tripped (fail-safe); the operator resets
                r = await asyncio.to_thread(cli, "reset", "--socket", str(sock), "--operator", "alice",
                                            "--reason", "after the SIGSTOP test")
                assert r.returncode == 0, r.stdout + r.stderr

            async def ready() -> bool:
                return (await status(sock)).get("mode") == "READY"
            await wait_for(ready, "READY mode again")

            async def accepting() -> bool:
                return (await status(sock)).get("plc_accepts") is True
            await wait_for(accepting, "the gateway to see the PLC accept its setpoints")

            # the operator CLI: start, then a readable status
            r = await asyncio.to_thread(cli, "start", "--socket", str(sock), "--operator", "alice")
            assert r.returncode == 0 and "mode AUTO" in r.stdout, r.stdout + r.stderr
            r = await asyncio.to_thread(cli, "status", "--socket", str(sock))
            assert r.returncode == 0 and "mode AUTO" in r.stdout and "hard limits" in r.stdout, r.stdout
            assert re.search(r"^T\s+\d", r.stdout, flags=re.M), r.stdout
            await wait_for(lambda: twin.image["feed_flow_sp"] == 100.0, "policy actions at the twin")

            # /metrics: every metric listed, and values that move; /healthz
            port = (await status(sock))["metrics_port"]
            code, first = await asyncio.to_thread(http_get, port, "/metrics")
            assert code == 200
            missing = [m for m in METRICS if m not in first]
            assert not missing, missing
            from tests.unit.ops.test_grafana_dashboard import dashboard_metrics

            scraped = {line.split("{")[0].split(" ")[0] for line in first.splitlines() if line[:1].isalpha()}
            assert not dashboard_metrics() - scraped, dashboard_metrics() - scraped  # the dashboard's, for real
            await asyncio.sleep(0.5)
            _, second = await asyncio.to_thread(http_get, port, "/metrics")
            for name in ("edgewarden_cycles_total", 'edgewarden_stage_seconds_count{stage="read"}',
                         'edgewarden_stage_seconds_count{stage="infer"}', "edgewarden_cycle_seconds_count",
                         "edgewarden_audit_records_total"):
                assert sample(second, name) > sample(first, name), name
            assert sample(second, 'edgewarden_mode{mode="AUTO"}') == 1.0
            assert await asyncio.to_thread(http_get, port, "/healthz") == (200, "ok\n")

            # SIGHUP: a limit change is applied between cycles; a cycle-rate change is refused
            text = config.read_text()
            config.write_text(text.replace("hard = [290.0, 400.0]", "hard = [290.0, 395.0]", 1))
            proc.send_signal(signal.SIGHUP)
            await wait_for(lambda: "config reload" in log.read_text() and "applied" in log.read_text(),
                           "the reload to be applied")
            config.write_text(text.replace("cycle_hz = 20.0", "cycle_hz = 50.0"))
            proc.send_signal(signal.SIGHUP)
            await wait_for(lambda: "config reload refused" in log.read_text(), "the reload refusal")
            assert "gateway.cycle_hz" in log.read_text()
            assert (await status(sock)).get("mode") == "AUTO"  # a refused reload changes nothing

            # SIGTERM: STOPPING, safe outputs at the twin, exit 0
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 15)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            rx_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await rx_task
            rx.sock.close()
        assert code == 0, log.read_text()
        assert rx.times("STOPPING=1")
        img = twin.image
        assert (img["coolant_flow_sp"], img["feed_flow_sp"]) == SAFE
        await wait_for(lambda: not img["remote"], "the PLC's dead-man to take over", timeout=3)

    assert verify(tmp / "audit").ok
    records = [r.payload for r in iter_records(tmp / "audit")]
    starts = [r for r in records if r["kind"] == "operator" and r["cmd"] == "start"]
    assert starts and starts[0]["operator"] == "alice" and starts[0]["uid"] == os.getuid()
    reloads = [r for r in records if r["kind"] == "config_load" and r.get("reload")]
    assert reloads and reloads[0]["changed"] == ["safety.limits.T.hard"]
    assert any(r["kind"] == "config_reload_refused" for r in records)
    assert records[-1]["kind"] == "shutdown"
    lines = [ln for ln in log.read_text().splitlines() if ln.startswith("{")]
    assert lines and all('"cycle"' in ln for ln in lines if "mode" in ln)  # JSON, with correlation ids
    assert sum('"event": "mode"' in ln for ln in lines) < 10  # no per-cycle INFO line


@pytest.mark.anyio
async def test_daemon_under_systemd_protocol(tmp_path: Path) -> None:
    await scenario(tmp_path)
