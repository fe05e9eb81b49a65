"""Durable file operations in the log directory, shared by the writer, its recovery, its
retention and the exports: every change that must survive a crash is written, fsynced, and
(for names) made durable with a directory fsync."""

from __future__ import annotations

import json
import os
from pathlib import Path

from edgewarden.gateway.audit import record as fmt

LOCK_NAME = ".lock"
EXPORTED_NAME = "exported.json"  # the export marker: {"through_seq": N, ...}


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def write_file(path: Path, data: bytes, mode: int) -> None:
    """``path`` holds ``data`` with ``mode``, whole or not at all: written beside it with the
    mode from the first byte (a private key is never readable by others, not for a moment),
    fsynced, renamed into place, the directory fsynced. Raises OSError."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # whatever the umask
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def drop_torn_line(fd: int) -> None:
    """Cut a last line without its newline (a crash mid-export) so the next line starts clean."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    tail = os.pread(fd, min(size, 65536), max(0, size - 65536))
    cut = tail.rfind(b"\n")
    os.ftruncate(fd, (size - len(tail)) + cut + 1 if cut >= 0 else max(0, size - len(tail)))


def create_segment(directory: Path, first_seq: int, prev_hash: bytes) -> Path:
    """Create a segment atomically: header to a temp file, fsync, rename, fsync the dir."""
    path = directory / fmt.segment_name(first_seq)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, fmt.pack_header(first_seq, prev_hash))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    fsync_dir(directory)
    return path


def read_exported_marker(directory: Path) -> int:
    """``through_seq`` of ``directory/exported.json``; 0 when absent or unreadable."""
    try:
        value = json.loads((Path(directory) / EXPORTED_NAME).read_text(encoding="utf-8"))
        through = value["through_seq"]
        return through if isinstance(through, int) and through >= 0 else 0
    except (OSError, ValueError, KeyError, TypeError):
        return 0
