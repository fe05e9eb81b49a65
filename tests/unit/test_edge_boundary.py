"""Boundaries: nothing under edgewarden/gateway/ imports edgewarden.training, .simulators or
.hil (nor torch, h5py or gymnasium), at import time or lazily inside a function; the
benchmarks import nothing from tests/."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUTSIDE = ("edgewarden.training", "edgewarden.simulators", "edgewarden.hil", "torch", "h5py", "gymnasium")


def _outside(name: str) -> bool:
    return any(name == o or name.startswith(o + ".") for o in OUTSIDE)


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
    return out


def test_no_gateway_module_imports_what_the_edge_install_lacks() -> None:
    offenders = [f"{path.relative_to(ROOT)}:{line}: import {name}"
                 for path in sorted((ROOT / "edgewarden" / "gateway").rglob("*.py"))
                 for line, name in _imports(ast.parse(path.read_text(), str(path)))
                 if _outside(name)]
    assert offenders == []


def test_every_gateway_module_imports_and_the_cli_works_without_them() -> None:
    """In a fresh interpreter where those packages cannot be imported at all."""
    script = textwrap.dedent(f"""
        import importlib, importlib.abc, pkgutil, sys

        class Absent(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if any(name == o or name.startswith(o + ".") for o in {OUTSIDE!r}):
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None

        sys.meta_path.insert(0, Absent())
        from edgewarden import gateway
        names = [m.name for m in pkgutil.walk_packages(gateway.__path__, "edgewarden.gateway.")]
        for name in names:
            importlib.import_module(name)
        import re
        from edgewarden.gateway.cli import build_parser, main
        commands = set(re.findall(r"^    (\\w+)", build_parser().format_help(), flags=re.M))
        assert {{"run", "config", "audit", "model", "demo"}} <= commands, sorted(commands)
        assert not {{"train", "twin", "hil"}} & commands, sorted(commands)
        assert main(["config", "check", "edgewarden/data/examples/cstr.toml"]) == 0
        print(len(names), "modules")
    """)
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "modules" in r.stdout


def test_benchmarks_run_on_the_installed_project_alone() -> None:
    """No benchmark imports tests/ or edits sys.path (they share benchmarks/_common.py)."""
    offenders = []
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        text = path.read_text()
        offenders += [f"{path.name}:{line}: import {name}" for line, name in _imports(ast.parse(text))
                      if name.split(".")[0] == "tests"]
        offenders += [f"{path.name}: edits sys.path" for _ in range(text.count("sys.path."))]
    assert offenders == []
