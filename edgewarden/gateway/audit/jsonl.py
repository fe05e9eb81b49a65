"""Reading the log out: filtered JSON lines and the export marker (a training dataset from
the log is training/'s: ``edgewarden train from-audit``, edgewarden/training/audit_dataset.py).

**Exported** (what retention relies on): a record is exported once ``edgewarden audit
export --format jsonl -o FILE`` has written it, unfiltered, to ``FILE`` and fsynced that
file; the command then records ``through_seq`` (the last record written) in
``exported.json`` in the log directory (temp file, fsync, rename, directory fsync; the
value only ever grows). The writer's retention deletes a segment only when all its
records are at or below ``through_seq``. Filtered exports, stdout and HDF5 exports do not
move the marker: they are not a copy of the log.

No export overwrites a file: it may hold the only copy of records retention has since
deleted. An unfiltered JSON-lines export to a file that already holds an export of this
log *continues* it (:func:`continuation`): it appends the records after the file's last
one, provided the log still holds that record (same hash) or starts right after it
(chained to it); anything else is refused.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from edgewarden.gateway.audit import record as fmt
from edgewarden.gateway.audit.files import EXPORTED_NAME, fsync_dir, read_exported_marker
from edgewarden.gateway.audit.verify import DecodedRecord, iter_records
from edgewarden.gateway.errors import AuditError


def parse_time(text: str) -> float:
    """Unix seconds from a number or an ISO-8601 time (UTC when no zone is given)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        t = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise AuditError(f"cannot read time {text!r}: give Unix seconds or ISO-8601 like "
                         "2026-11-23T10:00:00Z") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.UTC)
    return t.timestamp()


def select(records: Iterable[DecodedRecord], *, since: float | None = None, until: float | None = None,
           kinds: Iterable[str] | None = None) -> Iterator[DecodedRecord]:
    """Records with ``since <= t_wall < until`` and a kind in ``kinds`` (None: all)."""
    wanted = set(kinds) if kinds else None
    for rec in records:
        p = rec.payload
        if wanted is not None and p.get("kind") not in wanted:
            continue
        if in_window(p, since, until):
            yield rec


def in_window(payload: dict[str, Any], since: float | None, until: float | None) -> bool:
    """``since <= t_wall < until`` (either bound None: open); a record without a time is
    in no bounded window."""
    if since is None and until is None:
        return True
    t = payload.get("t_wall")
    if not isinstance(t, (int, float)):
        return False
    return (since is None or t >= since) and (until is None or t < until)


def record_line(rec: DecodedRecord) -> str:
    return json.dumps({"seq": rec.seq, "hash": rec.hash, "payload": rec.payload}, ensure_ascii=False) + "\n"


def unacknowledged(payload: dict[str, Any]) -> list[str]:
    """The write outcomes of a cycle or trip record that are not acknowledgements
    (``failed: …``, ``timeout``, ``not_attempted: …``); empty when everything sent was."""
    acks: list[Any] = []
    for field in ("ack", "prev_ack"):
        if isinstance(payload.get(field), list):
            acks += payload[field]
    safe = payload.get("safe_write")
    if isinstance(safe, dict) and isinstance(safe.get("ack"), list):
        acks += safe["ack"]
    return [a for a in acks if a != "ok"]


def write_jsonl(records: Iterable[DecodedRecord], out: TextIO) -> tuple[int, DecodedRecord | None]:
    n, last = 0, None
    for rec in records:
        out.write(record_line(rec))
        n, last = n + 1, rec
    return n, last


def continuation(path: Path, directory: Path) -> DecodedRecord | None:
    """The last record of an earlier export in ``path``, checked to be continuable from
    the log in ``directory``; None when ``path`` does not exist or is empty. Raises
    ``AuditError`` (nothing written) when appending to ``path`` could lose or misplace
    records: a file that is not an export of this log, an interrupted export, or a gap."""
    path = Path(path)
    try:
        line, partial = fmt.tail_lines(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AuditError(f"cannot read {path}: {exc}") from None
    if partial:
        raise AuditError(f"{path} ends in an incomplete line (an export that was interrupted?): "
                         "remove that line or export to a new file; nothing was written")
    if line is None:
        return None
    try:
        last = json.loads(line)
        prev = DecodedRecord(int(last["seq"]), str(last["hash"]), last["payload"])
    except (ValueError, KeyError, TypeError):
        raise AuditError(f"{path} exists and is not a JSON-lines export of an audit log: an export never "
                         "overwrites a file; choose a new file") from None
    for rec in iter_records(directory):
        if rec.seq == prev.seq and rec.hash == prev.hash:
            return prev
        if rec.seq == prev.seq + 1 and rec.prev_hash == prev.hash:
            return prev
        if rec.seq >= prev.seq:
            break
    raise AuditError(f"{path} ends at seq {prev.seq}, which this log does not continue (another log's "
                     f"export, or the records after it were deleted after an export to another file): "
                     "export to a new file; nothing was written")


def mark_exported(directory: Path, last: DecodedRecord, destination: Path) -> int:
    """Move the export marker up to ``last.seq`` (never down). Returns the marker's value."""
    directory = Path(directory)
    through = max(read_exported_marker(directory), last.seq)
    marker = {"through_seq": through, "head": last.hash if through == last.seq else None,
              "destination": str(destination), "t_wall": time.time()}
    tmp = directory / (EXPORTED_NAME + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(marker, f, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / EXPORTED_NAME)
        fsync_dir(directory)
    except OSError as exc:
        raise AuditError(f"exported to {destination}, but cannot write the export marker in {directory}: "
                         f"{exc}") from None
    return through
