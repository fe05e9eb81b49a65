"""The wheel is the product: one top-level package, ``edgewarden``, and everything the demo,
the service install and the HIL bench read from disk inside it. Built here without
network (``--no-build-isolation``: the dev extra brings setuptools); .ci/run goes further
and installs it into a fresh venv, then runs the demo and a service install from it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edgewarden.data import EXAMPLES, MODELS, SYSTEMD

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(out), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    [path] = out.glob("edgewarden-*.whl")
    return zipfile.ZipFile(path)


def test_one_top_level_package(wheel: zipfile.ZipFile) -> None:
    tops = {name.split("/")[0] for name in wheel.namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"edgewarden"}, sorted(tops)
    top_level = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    assert "edgewarden = edgewarden.gateway.cli:main" in wheel.read(top_level[0]).decode()


def test_it_ships_what_the_commands_read(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    shipped = [p for d in (EXAMPLES, MODELS, SYSTEMD) for p in d.rglob("*") if p.is_file()]
    assert {"edgewarden/data/systemd/edgewarden.service", "edgewarden/data/systemd/edgewarden.service.d/"
            "realtime.conf.example", "edgewarden/data/models/cstr_baseline.onnx",
            "edgewarden/data/examples/cstr.toml"} <= names
    missing = [str(p.relative_to(ROOT)) for p in shipped if str(p.relative_to(ROOT)) not in names]
    assert missing == []
    hil = [p for p in (ROOT / "edgewarden" / "hil").rglob("*") if p.suffix in (".toml", ".onnx")]
    assert [str(p.relative_to(ROOT)) for p in hil if str(p.relative_to(ROOT)) not in names] == []
    assert "edgewarden/py.typed" in names
    assert any(n.startswith("edgewarden/gateway/safety/_kernel.") and n.endswith((".so", ".pyd")) for n in names)
    assert not [n for n in names if "__pycache__" in n or n.startswith("edgewarden/data/var")]
