"""``edgewarden config example``: a shipped example copied out as a plant's starting point,
loadable where it is written (the model by absolute path, the audit log and socket beside
it), never over an existing file unless asked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgewarden.data import MODELS
from edgewarden.gateway.cli import main
from edgewarden.gateway.config import load_config
from edgewarden.gateway.example_config import example_names


def test_every_shipped_example_loads_where_it_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert {"cstr", "cstr_modbus", "cstr_learned", "tanks", "hvac"} <= set(example_names())
    monkeypatch.chdir(tmp_path)
    for name in example_names():
        assert main(["config", "example", name, "-o", f"{name}.toml"]) == 0
        assert f"next: edgewarden config check {name}.toml" in capsys.readouterr().err
        s = load_config(tmp_path / f"{name}.toml").settings
        assert s.policy.path.parent == MODELS and s.policy.path.is_file()
        assert s.audit.dir == tmp_path / "var" / "audit"
        assert main(["config", "check", f"{name}.toml"]) == 0, capsys.readouterr().err
        assert "OK" in capsys.readouterr().out


def test_stdout_list_and_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "example", "--list"]) == 0
    assert capsys.readouterr().out.split() == example_names()
    assert main(["config", "example"]) == 0  # cstr, to stdout
    assert f'path = "{MODELS / "cstr_baseline.onnx"}"' in capsys.readouterr().out
    assert main(["config", "example", "nope"]) == 78
    assert "no shipped example 'nope' (there are: cstr," in capsys.readouterr().err
    out = tmp_path / "plant.toml"
    out.write_text("mine\n")
    assert main(["config", "example", "cstr", "-o", str(out)]) == 1
    assert "exists: choose another --out, or --force" in capsys.readouterr().err
    assert out.read_text() == "mine\n"
    assert main(["config", "example", "cstr", "-o", str(out), "--force"]) == 0
    assert out.read_text().startswith("# edgewarden")
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        assert main(["config", "example", "cstr", "-o", str(ro / "x.toml")]) == 1
        assert "cannot write" in capsys.readouterr().err
