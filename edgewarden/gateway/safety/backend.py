"""Which code runs the per-cycle safety arithmetic, chosen once per compiled object.

``c``: the compiled kernel (edgewarden/gateway/safety/_kernel.c, built by ``pip install`` where a C
compiler is present). ``numpy``: the numpy code in each module, the fallback on a box
where the kernel was not built; the same verdicts, reason codes, outputs and state, several
times slower (docs/performance.md, Safety). ``EDGEWARDEN_SAFETY_KERNEL`` = ``auto`` (default:
``c`` when built), ``c`` (refuse to start without it) or ``numpy`` (force the fallback).
"""

from __future__ import annotations

import os
from types import ModuleType

from edgewarden.gateway.errors import ConfigError

ENV = "EDGEWARDEN_SAFETY_KERNEL"
CHOICES = ("auto", "c", "numpy")


def kernel_module() -> ModuleType | None:
    """The compiled kernel, or None where it was not built."""
    try:
        from edgewarden.gateway.safety import _kernel
    except ImportError:
        return None
    return _kernel


def choose(backend: str | None = None) -> ModuleType | None:
    """The kernel module to use (None: numpy), for ``backend`` or, when None, the environment."""
    choice = backend if backend is not None else os.environ.get(ENV, "auto").strip().lower() or "auto"
    if choice not in CHOICES:
        raise ConfigError(f"{ENV}={choice!r}: expected one of {', '.join(CHOICES)}")
    if choice == "numpy":
        return None
    kernel = kernel_module()
    if kernel is None and choice == "c":
        raise ConfigError(f"the compiled safety kernel (edgewarden.gateway.safety._kernel) is not built, and {ENV}=c "
                          "requires it: reinstall with a C compiler present (pip install -e .), "
                          f"or set {ENV}=numpy")
    return kernel


def name(kernel: ModuleType | None) -> str:
    return "numpy" if kernel is None else "c"
