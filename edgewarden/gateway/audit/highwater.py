"""The audit log's high-water mark: how far this gateway has written its log.

Kept beside the log directory, not in it (``<dir>.state``: removing the directory leaves
it), as one small JSON object ``{"seq": N, "head": "<hex>"}``: the last durable record and
its hash. The writer updates it at most once a second after a commit, and at open and
close (fsynced then). At open, a log that ends before the mark (cut at its end, rolled
back to an older copy, or replaced by an empty one) or whose record at the mark is another
one is refused: continuing it would reuse sequence numbers and hide the loss. Starting a
new chain there is an operator's decision, made with ``edgewarden audit new-chain`` and
recorded in the log (a ``chain_restart`` record naming the mark it overrides).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from edgewarden.gateway.errors import AuditError

_MAX_BYTES = 4096


@dataclass(frozen=True)
class Mark:
    seq: int  # the last record this gateway made durable
    head: str  # its hash, hex


def path_for(directory: Path) -> Path:
    """``/var/lib/edgewarden/audit`` → ``/var/lib/edgewarden/audit.state`` (of the resolved
    path: ``.``, ``..`` or a symlink name the same mark as the daemon's config does)."""
    directory = Path(directory).resolve()
    return directory.with_name(directory.name + ".state")


def read(path: Path) -> Mark | None:
    """The mark, None when there is none yet; AuditError for one that cannot be trusted."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AuditError(f"audit high-water mark {path}: cannot open it: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "rb") as f:
            data = f.read(_MAX_BYTES + 1)
        obj = json.loads(data) if len(data) <= _MAX_BYTES else None
    except (OSError, ValueError):
        obj = None
    if not (isinstance(obj, dict) and type(obj.get("seq")) is int and obj["seq"] >= 0
            and isinstance(obj.get("head"), str) and len(obj["head"]) == 64):
        raise AuditError(f"audit high-water mark {path} is not one this gateway wrote (expected "
                         '{"seq": N, "head": "<64 hex digits>"}); start a new chain on purpose with '
                         "`edgewarden audit new-chain`")
    return Mark(obj["seq"], obj["head"])


def write(path: Path, mark: Mark, *, sync: bool) -> None:
    """Replace the mark atomically: the new content is fsynced before the rename (a power
    loss leaves the old mark or the new one, never an empty file); the directory too when
    ``sync``."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, json.dumps({"seq": mark.seq, "head": mark.head}).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if sync:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def behind(mark: Mark | None, last_seq: int, head_at: str | None) -> str | None:
    """How a log is behind ``mark`` (None: it is not). ``head_at``: the log's hash of the
    record at the mark's seq (None when the log does not hold it: retention may have
    deleted it, which is judged by the seq alone)."""
    if mark is None or mark.seq == 0:
        return None
    if last_seq < mark.seq:
        return f"ends at seq {last_seq}" if last_seq else "is empty"
    if head_at is not None and head_at != mark.head:
        return f"has another record at seq {mark.seq}"
    return None


def check(directory: Path, mark: Mark | None, last_seq: int, head_at: str | None) -> None:
    """Refuse a log that is behind ``mark`` (see :func:`behind`)."""
    why = behind(mark, last_seq, head_at)
    if why is None:
        return
    raise AuditError(
        f"audit log {directory} {why}, but this gateway had written it up to seq {mark.seq} "
        f"({path_for(directory)}): it was cut, rolled back or replaced. Keep it as evidence; to start "
        f"a new chain there on purpose (recorded as such): edgewarden audit new-chain {directory} "
        "--reason TEXT --operator NAME")
