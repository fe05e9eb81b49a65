"""The installed version of edgewarden and of the libraries it runs on (``--version``,
``edgewarden_build_info``, the HIL report's header)."""

from __future__ import annotations

import importlib.metadata
import platform


def version(distribution: str = "edgewarden") -> str:
    """An installed distribution's version ("unknown" when it is not installed, e.g. a bare source tree)."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def build_info() -> dict[str, str]:
    """The versions that decide how the gateway behaves, as labels."""
    return {"version": version(), "python": platform.python_version(),
            **{lib: version(lib) for lib in ("asyncua", "pymodbus", "onnxruntime", "numpy")}}
