"""What the benchmarks share: the machine line every figure is printed with, latency
summaries, a process's resident memory, and (from edgewarden.simulators.harness) a free port and
polling. The benchmarks run against the installed project (``pip install -e .``) and
import nothing from tests/."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

import numpy as np

try:
    from edgewarden.simulators.harness import free_port, wait_for  # noqa: F401 (shared through this module)
except ImportError:  # an older revision run by compare_revisions.sh, for a benchmark that needs neither
    pass

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    """CPU, CPU count, kernel, Python, numpy and the load average: printed with every figure."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{cpu}; {os.cpu_count()} CPUs; {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}; numpy {np.__version__}; load avg {load}")


def summary_us(samples: np.ndarray | list[float], to_us: float) -> dict[str, float]:
    """n, median, p99, p99.9 (``p999``) and max in µs of the finite samples (each times
    ``to_us``: 1e6 for seconds, 1e-3 for nanoseconds); NaN where there are none."""
    x = np.asarray(samples, dtype=float)
    x = x[np.isfinite(x)] * to_us
    if len(x) == 0:
        nan = float("nan")
        return {"n": 0, "median": nan, "p99": nan, "p999": nan, "max": nan}
    return {"n": int(len(x)), "median": float(np.median(x)), "p99": float(np.percentile(x, 99)),
            "p999": float(np.percentile(x, 99.9)), "max": float(x.max())}


def rss_kib(pid: int) -> int:
    """Resident memory of a process (KiB), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")
