from __future__ import annotations

from pathlib import Path

import pytest

from edgewarden.data import MODELS
from edgewarden.gateway.cli import main
from edgewarden.gateway.config import load_config
from edgewarden.gateway.errors import ConfigError
from tests.helpers import EXAMPLE, write_config


def test_example_config_is_valid() -> None:
    loaded = load_config(EXAMPLE)
    s = loaded.settings
    assert s.policy.observations == ["T", "CA", "Tj", "T_sp"]
    assert s.safety.actions["coolant_flow_sp"].safe == 200.0
    assert s.policy.path.is_absolute() and s.policy.path.name == "cstr_baseline.onnx"
    assert len(loaded.sha256) == 64


def test_environment_overrides_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEWARDEN_GATEWAY__CYCLE_HZ", "50")
    monkeypatch.setenv("EDGEWARDEN_METRICS__PORT", "9200")
    s = load_config(EXAMPLE).settings
    assert s.gateway.cycle_hz == 50.0
    assert s.metrics.port == 9200
    assert s.gateway.name == "cstr-1"  # the rest of the section still comes from the file


def test_unknown_key_names_file_and_path(tmp_path: Path) -> None:
    path = write_config(tmp_path, policy=tmp_path / "p.onnx", replace={r"^auto_start = false": "autostart = false"})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg and "gateway.autostart: unknown key" in msg


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write_config(tmp_path, policy=tmp_path / "p.onnx", replace={
        r"^cycle_hz = 10.0": "cycle_hz = -1",
        r'^heartbeat_tag = "heartbeat"': 'heartbeat_tag = "nope"',
        r"^safe = 200.0": "safe = 999.0",
    })
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert "gateway.cycle_hz: Input should be greater than 0 (got -1)" in msg
    assert "safety.actions.coolant_flow_sp" in msg and "outside [min, max]" in msg
    assert "2 problems" in msg  # schema errors first; cross-references after the schema is clean


def test_cross_references_are_checked(tmp_path: Path) -> None:
    path = write_config(tmp_path, policy=tmp_path / "p.onnx", replace={
        r'^heartbeat_tag = "heartbeat"': 'heartbeat_tag = "T"',
        r'^observations = \["T", "CA", "Tj", "T_sp"\]': 'observations = ["T", "pressure"]',
    })
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert "policy.observations[1]: no tag named 'pressure'" in msg
    assert "safety.heartbeat_tag: tag 'T' must be writable" in msg


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[gateway\nname = 1")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="configuration file .*: file not found"):
        load_config(tmp_path / "missing.toml")


def test_config_check_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(EXAMPLE)]) == 0
    assert "OK" in capsys.readouterr().out
    path = write_config(tmp_path, policy=tmp_path / "p.onnx", replace={r"^cycle_hz = 10.0": "cycle_hz = 0"})
    assert main(["config", "check", str(path)]) == 78
    err = capsys.readouterr().err
    assert "gateway.cycle_hz" in err and "Traceback" not in err


def test_settings_that_cannot_meet_the_time_budget_are_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path, policy=tmp_path / "p.onnx", replace={
        r"^comms_timeout_ms = 1000": "comms_timeout_ms = 150\nmax_data_age_ms = 200",
        r"^timeout_s = 2.0": 'timeout_s = 2.0\nmode = "subscribe"\nfallback_after_ms = 190',
        r'^description = "reactor temperature"': 'description = "reactor temperature"\nfreeze_s = 0.05',
        r'^stale_ms = 1000\ndescription = "concentration': 'stale_ms = 80\ndescription = "concentration',
    })
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg and "5 problems" in msg, msg
    assert "gateway.comms_timeout_ms: 150 ms is less than two cycles (200 ms at cycle_hz = 10)" in msg
    assert "gateway.max_data_age_ms: 200 ms must exceed one cycle (100 ms) and not exceed comms_timeout_ms" in msg
    assert "tags.CA.stale_ms: 80 ms is not more than one cycle (100 ms)" in msg
    assert "tags.T.freeze_s: 0.05 s is not more than one cycle (100 ms)" in msg
    assert "connections.plc1.fallback_after_ms: 190 ms plus one cycle must be less than the max data age" in msg


def test_data_age_and_subscription_fallback_defaults(tmp_path: Path) -> None:
    path = write_config(tmp_path, policy=tmp_path / "p.onnx",
                        replace={r"^timeout_s = 2.0": 'timeout_s = 2.0\nmode = "subscribe"'})
    s = load_config(path).settings
    assert s.gateway.max_data_age_ms is None and s.gateway.data_age_limit_ms == 500.0  # half the comms budget
    assert s.connections["plc1"].fallback_after_ms == 250.0  # half the max data age


def test_an_unsecured_opc_ua_link_off_loopback_is_refused_unless_accepted(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    """Secure by default: security_policy None is fine to 127.0.0.1 (the twin, a local
    server), refused to any other host, and with allow_insecure = true accepted with a warning."""
    policy = MODELS / "cstr_baseline.onnx"  # config check wants the model there
    insecure = write_config(tmp_path, policy=policy, url="opc.tcp://10.0.0.5:4840")
    with pytest.raises(ConfigError) as err:
        load_config(insecure)
    msg = str(err.value)
    assert str(insecure) in msg and "connections.plc1" in msg and "security_policy None" in msg, msg
    assert "opc.tcp://10.0.0.5:4840" in msg and "allow_insecure = true" in msg, msg
    assert main(["config", "check", str(insecure)]) == 78

    (tmp_path / "b").mkdir()
    accepted = write_config(tmp_path / "b", policy=policy, url="opc.tcp://plc-3.plant:4840",
                            replace={r'^url = "(opc.tcp://[^"]*)"': 'url = "\\1"\nallow_insecure = true'})
    assert load_config(accepted).settings.connections["plc1"].allow_insecure
    capsys.readouterr()
    assert main(["config", "check", str(accepted)]) == 0
    err_text = capsys.readouterr().err
    assert "warning:" in err_text and "connections.plc1: security_policy None to opc.tcp://plc-3.plant:4840" in err_text

    for url in ("opc.tcp://127.0.0.1:4840", "opc.tcp://localhost:4840", "opc.tcp://[::1]:4840"):
        (tmp_path / "c").mkdir(exist_ok=True)
        local = write_config(tmp_path / "c", policy=policy, url=url)
        assert load_config(local).settings.connections["plc1"].security_policy == "None"
        capsys.readouterr()
        assert main(["config", "check", str(local)]) == 0
        assert "security_policy None" not in capsys.readouterr().err


def test_plain_modbus_off_loopback_is_a_warning(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    path = write_config(tmp_path, policy=MODELS / "cstr_baseline.onnx",
                        example=EXAMPLE.parent / "cstr_modbus.toml",
                        replace={r'^host = "127.0.0.1"\nport = 5020': 'host = "192.168.10.20"\nport = 502'})
    capsys.readouterr()
    assert main(["config", "check", str(path)]) == 0
    assert "Modbus TCP to 192.168.10.20:" in capsys.readouterr().err
