"""The fail-safe boundary's account of a fault nobody anticipated.

Any exception that escapes a stage of the cycle, or a task the daemon depends on, trips
the same latched e-stop as a hard limit does (edgewarden/gateway/cycle.py,
edgewarden/gateway/app.py). Its trip code is ``internal_fault:<stage>:<exception type>``
and its message one line: the exception's first line and where it was raised (the
innermost frame of edgewarden, and the library's frame below it if it came from one), so
the audit record and the daemon's log name the cause without a traceback.
"""

from __future__ import annotations

import os
import traceback
from pathlib import Path

_PACKAGE = str(Path(__file__).resolve().parents[2]) + os.sep  # this package's own directory, wherever installed


def _short(filename: str) -> str:
    """A frame's file as a path inside its package (``edgewarden/...``, ``asyncua/...``)."""
    if filename.startswith(_PACKAGE):
        return "edgewarden/" + filename[len(_PACKAGE):].replace(os.sep, "/")
    parts = filename.replace(os.sep, "/").split("/")
    for anchor in ("site-packages", "dist-packages"):
        if anchor in parts:
            return "/".join(parts[parts.index(anchor) + 1:])
    if "edgewarden" in parts:
        return "/".join(parts[len(parts) - 1 - parts[::-1].index("edgewarden"):])
    return "/".join(parts[-2:])


def where(exc: BaseException) -> str:
    """``file:line`` of the innermost edgewarden frame, then the innermost frame if that is
    a library's (``edgewarden/x.py:12 → asyncua/y.py:40``); ``unknown`` with no traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "unknown"
    ours = [f for f in frames if f.filename.startswith(_PACKAGE)]
    inner = frames[-1]
    parts = []
    if ours:
        parts.append(f"{_short(ours[-1].filename)}:{ours[-1].lineno}")
    if not ours or ours[-1] is not inner:
        parts.append(f"{_short(inner.filename)}:{inner.lineno}")
    return " → ".join(parts)


def first_line(exc: BaseException) -> str:
    """The exception's message, first line only (its type where it has none)."""
    lines = str(exc).splitlines()
    return lines[0] if lines and lines[0].strip() else type(exc).__name__


def internal_fault(stage: str, exc: BaseException) -> tuple[str, str]:
    """The trip code and message of ``exc`` escaping ``stage`` (its type qualified by its
    module unless built in: ``struct.error``, ``uaerrors.BadTimeout``)."""
    cls = type(exc)
    kind = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__qualname__}"
    return f"internal_fault:{stage}:{kind}", f"{kind} in {stage}: {first_line(exc)} (at {where(exc)})"
