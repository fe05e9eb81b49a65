"""Files are checked before they are read: one way to read a file a user named.

A path given in a config or on the command line may be anything: a FIFO (whose open
blocks until a writer comes, which may be never), ``/dev/zero`` (endless), a symlink loop,
a directory, a file of gigabytes. :func:`read_regular` opens it without blocking
(``O_NONBLOCK``; no controlling terminal) once ``stat`` has said it is a regular file (a
device is never opened), checks again on the open descriptor that it is a regular file and no larger than the caller's bound, and reads at most that much; anything
else is the caller's error class with one line naming what the file is for, the path and
why. :func:`check_regular` makes the same checks for a file another library opens itself
(HDF5).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from edgewarden.gateway.errors import GatewayError

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _why(exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return "file not found"
    if exc.errno == errno.ELOOP:
        return "a symbolic link loop"
    return exc.strerror or str(exc)


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} bytes"


def _refuse_kind(mode: int, path: Path, what: str, error: type[GatewayError]) -> None:
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
        raise error(f"{what} {path}: {kind}, not a regular file")


def _open_checked(path: Path, what: str, max_bytes: int | None, error: type[GatewayError]) -> tuple[int, int]:
    try:
        _refuse_kind(os.stat(path).st_mode, path, what, error)  # before any open: a device's has effects
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise error(f"{what} {path}: {_why(exc)}") from None
    try:
        st = os.fstat(fd)
        _refuse_kind(st.st_mode, path, what, error)  # what was opened (the path may have changed since)
        if max_bytes is not None and st.st_size > max_bytes:
            raise error(f"{what} {path}: {_size(st.st_size)}, more than the {_size(max_bytes)} allowed for it")
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def read_regular(path: Path | str, *, what: str, max_bytes: int, error: type[GatewayError]) -> bytes:
    """The bytes of ``path``, a regular file of at most ``max_bytes``, or ``error``."""
    path = Path(path)
    fd, size = _open_checked(path, what, max_bytes, error)
    try:
        chunks, left = [], max_bytes + 1  # a file that grew since fstat is still bounded
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise error(f"{what} {path}: cannot read it: {_why(exc)}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_bytes:
        raise error(f"{what} {path}: more than the {_size(max_bytes)} allowed for it")
    return data


def read_text(path: Path | str, *, what: str, max_bytes: int, error: type[GatewayError],
              encoding: str = "utf-8") -> str:
    """:func:`read_regular`, decoded; text that does not decode is ``error`` too."""
    data = read_regular(path, what=what, max_bytes=max_bytes, error=error)
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path}: not {encoding} text (byte {exc.start})") from None


def check_regular(path: Path | str, *, what: str, error: type[GatewayError]) -> None:
    """``path`` is a regular file that can be opened, or ``error`` (for a library that opens it)."""
    fd, _ = _open_checked(Path(path), what, None, error)
    os.close(fd)
