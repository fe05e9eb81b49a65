"""``edgewarden twin`` as a process: ready file, clean SIGTERM, one-line bind errors."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The real top-level main, limited to our group (other groups may not exist yet).
DRIVER = ("import sys; from edgewarden.gateway import cli; cli._GROUPS = ('edgewarden.simulators.cli',); "
          "sys.exit(cli.main(sys.argv[1:]))")


def edgewarden(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", DRIVER, *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 20.0) -> dict:
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "twin never became ready"
        time.sleep(0.05)
    return json.loads(path.read_text())


def test_list() -> None:
    proc = edgewarden("twin", "list")
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert out.startswith("cstr\t")


def test_serve_ready_file_sigterm_and_address_in_use(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    proc = edgewarden("twin", "serve", "cstr", "--opcua", "127.0.0.1:0", "--modbus",
                      "127.0.0.1:0", "--ready-file", str(ready))
    try:
        info = wait_for(ready, proc)
        assert info["pid"] == proc.pid
        assert info["opcua_url"].startswith("opc.tcp://127.0.0.1:")
        assert info["modbus_host"] == "127.0.0.1" and info["modbus_port"] > 0
        assert [p.name for p in tmp_path.iterdir()] == ["ready.json"]  # no temp left

        opcua_port = info["opcua_url"].rsplit(":", 1)[1]
        clash = edgewarden("twin", "serve", "cstr", "--opcua", f"127.0.0.1:{opcua_port}",
                           "--modbus", "none")
        out, err = clash.communicate(timeout=30)
        assert clash.returncode == 69
        assert err.strip().count("\n") == 0, err  # one line, no traceback
        assert "cannot serve OPC UA" in err and "Traceback" not in err

        clash = edgewarden("twin", "serve", "cstr", "--opcua", "127.0.0.1:0", "--modbus",
                           f"127.0.0.1:{info['modbus_port']}")
        out, err = clash.communicate(timeout=30)
        assert clash.returncode == 69
        assert err.strip().count("\n") == 0 and "cannot serve Modbus" in err, err
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert f"ready: opcua={info['opcua_url']}" in out
    assert "Traceback" not in err


def test_bad_arguments_are_one_line_errors() -> None:
    for args, code in ((["--opcua", "localhost"], 78), (["--watchdog-ms", "0"], 78)):
        proc = edgewarden("twin", "serve", "cstr", *args)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == code, err
        assert err.startswith("edgewarden: error: ") and err.strip().count("\n") == 0
    proc = edgewarden("twin", "serve", "nosuchplant")
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 78 and "unknown plant" in err


def test_fault_command_against_a_served_twin(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    proc = edgewarden("twin", "serve", "tanks", "--opcua", "127.0.0.1:0", "--modbus",
                      "127.0.0.1:0", "--faults", "127.0.0.1:0", "--ready-file", str(ready))
    try:
        info = wait_for(ready, proc)
        assert info["control_host"] == "127.0.0.1" and info["control_port"] > 0

        def fault(*args: str) -> tuple[int, str, str]:
            p = edgewarden("twin", "fault", "--ready-file", str(ready), *args)
            out, err = p.communicate(timeout=30)
            return p.returncode, out, err

        rc, out, err = fault("bias", "h1", "--value", "2.5")
        assert rc == 0, err
        injected = json.loads(out)["fault"]
        assert injected["kind"] == "bias" and injected["value"] == 2.5
        rc, out, _ = fault("list")
        assert [f["id"] for f in json.loads(out)["faults"]] == [injected["id"]]
        rc, out, _ = fault("clear", str(injected["id"]))
        assert rc == 0 and json.loads(out)["cleared"] == [injected["id"]]
        rc, out, err = fault("freeze", "no_such_tag")
        assert rc != 0 and "twin refused" in err and err.strip().count("\n") == 0
        p = edgewarden("twin", "fault", "--control", "127.0.0.1:1",
                       "status")
        _, err = p.communicate(timeout=30)
        assert p.returncode != 0 and "Traceback" not in err
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0
