"""The two implementations of the safety arithmetic, for tests to run against both.

``c`` (the compiled kernel) is skipped where it was not built, unless
EDGEWARDEN_REQUIRE_SAFETY_KERNEL=1 (set by the README's test command, so CI fails
instead of skipping when the kernel is missing).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from edgewarden.gateway.safety.backend import kernel_module

REQUIRED = os.environ.get("EDGEWARDEN_REQUIRE_SAFETY_KERNEL") == "1"
BUILT = kernel_module() is not None
BACKENDS = [
    pytest.param("c", marks=pytest.mark.skipif(not BUILT and not REQUIRED,
                                               reason="the compiled safety kernel is not built")),
    "numpy",
]
each_backend = pytest.mark.parametrize("backend", BACKENDS)

CHECKER_STATE = ("_v", "_q", "_ts", "_stamp", "_changed", "_prev", "_state", "_rate")


def same_bits(x: object, y: object) -> bool:
    """The same array to the bit (NaN payloads and -0.0 included)."""
    a, b = np.asarray(x), np.asarray(y)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def assert_same_bits(a: object, b: object, attrs: tuple[str, ...], where: object) -> None:
    """Two objects (kernel and numpy) hold the same arrays, to the bit."""
    for attr in attrs:
        assert same_bits(getattr(a, attr), getattr(b, attr)), (where, attr, getattr(a, attr), getattr(b, attr))
