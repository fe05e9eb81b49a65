"""The shipped example configs, made to stand somewhere else: pointed at a twin on this
machine (the demo, the tests and the benchmarks each run the gateway this way, so there is
one place that rewrites one), or copied out as a plant's starting point
(``edgewarden config example``).

The examples sit beside the shipped models (``edgewarden/data/``: they name ``../models``
and ``../var``) and use the twin's default ports; :func:`adapt_example` replaces exactly those lines, and then any further
``replace`` patterns (regular expressions, each of which must match), and refuses an
example that no longer has a line it expects.
"""

from __future__ import annotations

import re
from pathlib import Path

from edgewarden.data import EXAMPLES, MODELS
from edgewarden.gateway.errors import ConfigError

SHIPPED_MODEL = MODELS / "cstr_baseline.onnx"


def adapt_example(out_dir: Path, *, example: Path = EXAMPLES / "cstr.toml", opcua_url: str | None = None,
                  modbus_port: int | None = None, policy: Path = SHIPPED_MODEL, audit_dir: Path | str | None = None,
                  socket: Path | str | None = None, replace: dict[str, str] | None = None, extra: str = "") -> Path:
    """Write ``out_dir/gateway.toml`` from ``example``; return its path. The audit log and
    the control socket default to ``out_dir``; the metrics port to any free one."""
    text = example.read_text()
    lines = {
        r'^path = "\.\./models/[^"]*"': f'path = "{policy}"',
        r'^dir = "\.\./var/audit"': f'dir = "{audit_dir if audit_dir is not None else out_dir / "audit"}"',
        r'^socket = "\.\./var/control\.sock"': f'socket = "{socket if socket is not None else out_dir / "control.sock"}"',
        r"^port = 9108\b": "port = 0",
    }
    if opcua_url is not None:
        lines[r'^url = "opc\.tcp://127\.0\.0\.1:4840"'] = f'url = "{opcua_url}"'
    if modbus_port is not None:
        lines[r"^port = 5020\b"] = f"port = {modbus_port}"
    edits = [(pattern, lambda _m, new=new: new) for pattern, new in lines.items()]  # literal text
    for pattern, repl in [*edits, *(replace or {}).items()]:  # then the caller's, as re.sub replacements
        text, n = re.subn(pattern, repl, text, flags=re.M)
        if not n:
            raise ConfigError(f"{example}: cannot adapt it for a local twin: {pattern!r} not found")
    path = out_dir / "gateway.toml"
    path.write_text(text + extra)
    return path


def example_names() -> list[str]:
    return sorted(p.stem for p in EXAMPLES.glob("*.toml"))


def standalone_example(name: str) -> str:
    """The text of the shipped example ``name``, made to stand anywhere: its models by
    absolute path (the ones this install ships), its audit log and control socket under
    ``var/`` beside the file it is written to."""
    path = EXAMPLES / f"{name}.toml"
    if name not in example_names():
        raise ConfigError(f"no shipped example {name!r} (there are: {', '.join(example_names())})")
    text = path.read_text().replace('"../models/', f'"{MODELS}/').replace('"../var/', '"var/')
    if '"../' in text:  # an example with a path this function does not know how to move
        raise ConfigError(f"{path}: a relative path outside ../models and ../var cannot be copied out")
    return text
