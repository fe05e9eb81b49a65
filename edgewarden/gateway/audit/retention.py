"""Retention: which old segments may go, and deleting them.

A segment is deleted only when it is over a limit (count, bytes or age), every record in
it is at or below the export marker's ``through_seq`` (it is in an export still on disk),
and every older segment goes too: the log always starts with a whole segment. The segment
being written is never deleted. :func:`plan` is the rule, with no I/O; :func:`apply`
carries it out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from edgewarden.gateway.audit import record as fmt
from edgewarden.gateway.audit.files import fsync_dir, read_exported_marker


@dataclass(frozen=True, slots=True)
class Limits:
    max_segments: int | None = None
    max_bytes: int | None = None
    max_age_s: float | None = None

    def __post_init__(self) -> None:
        if self.max_segments is not None and self.max_segments < 2:
            raise ValueError("retention_max_segments must be at least 2")

    @property
    def any(self) -> bool:
        return bool(self.max_segments or self.max_bytes or self.max_age_s)


@dataclass(frozen=True, slots=True)
class Segment:
    first_seq: int
    size: int
    age_s: float


def plan(segments: list[Segment], limits: Limits, exported_through: int) -> tuple[int, int]:
    """``(doomed, blocked)``: delete the oldest ``doomed`` segments; ``blocked`` closed
    segments are over a limit but kept because not all their records were exported."""
    total, count = sum(s.size for s in segments), len(segments)
    for i in range(len(segments) - 1):  # never the segment being written
        over = ((limits.max_segments is not None and count > limits.max_segments)
                or (limits.max_bytes is not None and total > limits.max_bytes)
                or (limits.max_age_s is not None and segments[i].age_s > limits.max_age_s))
        if not over:
            return i, 0
        if segments[i + 1].first_seq - 1 > exported_through:
            return i, len(segments) - 1 - i  # this and every later closed segment
        total, count = total - segments[i].size, count - 1
    return max(len(segments) - 1, 0), 0


@dataclass(frozen=True, slots=True)
class Outcome:
    deleted: list[str]  # file names, oldest first
    blocked: int
    errors: int
    record: dict[str, object] | None  # payload of the ``retention`` record, when something was deleted


def apply(directory: Path, limits: Limits) -> Outcome:
    """Delete what :func:`plan` allows in ``directory``. OSError when the directory cannot be read."""
    listed = fmt.list_segments(directory)
    if len(listed) < 2:
        return Outcome([], 0, 0, None)
    now = time.time()
    segments = []
    for first_seq, path in listed:
        st = path.stat()
        segments.append(Segment(first_seq, st.st_size, now - st.st_mtime))
    through = read_exported_marker(directory)
    doomed, blocked = plan(segments, limits, through)
    deleted: list[str] = []
    errors = 0
    for _, path in listed[:doomed]:  # oldest first: a failure leaves a log that still starts cleanly
        try:
            path.unlink()
        except OSError:
            errors += 1
            break
        deleted.append(path.name)
    if not deleted:
        return Outcome([], blocked, errors, None)
    keep_seq, keep_path = listed[len(deleted)]
    with open(keep_path, "rb") as f:
        prev_hash = fmt.HEADER.unpack_from(f.read(fmt.HEADER_SIZE), 0)[3]
    fsync_dir(directory)
    record = {"deleted": deleted, "first_seq_kept": keep_seq, "prev_hash": prev_hash.hex(),
              "exported_through": through}
    return Outcome(deleted, blocked, errors, record)
