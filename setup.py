"""Builds the safety kernel, edgewarden/gateway/safety/_kernel.c; everything else is in pyproject.toml.

The extension is optional: on a box without a C compiler the install still succeeds and
the safety layer runs its numpy code (same verdicts, slower; docs/safety.md). CI proves
the kernel is built and used (EDGEWARDEN_REQUIRE_SAFETY_KERNEL=1 in the README's test
command). -ffp-contract=off: a fused multiply-add would round ``last ± rate·dt``
differently from the numpy code (GCC contracts by default where the CPU has FMA).
"""

import sys

from setuptools import Extension, setup

setup(ext_modules=[Extension(
    "edgewarden.gateway.safety._kernel",
    sources=["edgewarden/gateway/safety/_kernel.c"],
    extra_compile_args=[] if sys.platform == "win32" else ["-ffp-contract=off"],
    optional=True,
)])
