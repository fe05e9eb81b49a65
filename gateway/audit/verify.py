"""Checking and reading an audit log without trusting whoever wrote it.

:func:`verify` walks every segment and record: header, framing, crc, sequence
continuity and the SHA-256 chain, within and across segments, from the genesis record.
It does not repair anything; a torn tail left by a crash is reported (the writer
repairs it, with a ``repair`` record, the next time it opens the log).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.audit import record as fmt
from gateway.errors import AuditError


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    records: int  # records checked and found intact (all of them when ok)
    first_seq: int | None
    last_seq: int | None  # last intact record
    head: str  # hex SHA-256 of the last intact record (64 zeros for an empty log)
    segments: int
    error: str | None  # the first bad record: file, offset, seq and what broke


@dataclass(frozen=True, slots=True)
class DecodedRecord:
    seq: int
    hash: str  # hex SHA-256 of the record body
    payload: dict[str, Any]


def verify(directory: Path, *, require_genesis: bool = True) -> VerifyResult:
    """Check the whole log in ``directory``. Never raises for a damaged log: see ``error``."""
    directory = Path(directory)
    if not directory.is_dir():
        return VerifyResult(False, 0, None, None, fmt.GENESIS_HASH.hex(), 0, f"{directory}: not a directory")
    state = fmt.WalkState()
    error: str | None = None
    records, first_seq, last_seq, head = 0, None, None, fmt.GENESIS_HASH
    try:
        for rec in fmt.walk(directory, state, require_genesis=require_genesis):
            try:
                rec.decode()
            except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
                raise fmt.ChainError(rec.path, rec.offset, rec.seq, f"payload is not a JSON object: {exc}") from None
            records, last_seq, head = records + 1, rec.seq, rec.hash
            first_seq = rec.seq if first_seq is None else first_seq
    except fmt.ChainError as exc:
        error = str(exc)
        if exc.torn:
            error += " (looks like a crash tail: the writer truncates it and logs a repair record on next open)"
    except OSError as exc:
        error = f"cannot read {directory}: {exc}"
    if error is None and not state.segments:
        error = f"{directory}: no audit segments (*.seg) found"
    return VerifyResult(
        ok=error is None,
        records=records,
        first_seq=first_seq,
        last_seq=last_seq,
        head=(head if records else state.head).hex(),
        segments=len(state.segments),
        error=error,
    )


def iter_records(directory: Path, *, require_genesis: bool = True) -> Iterator[DecodedRecord]:
    """Yield every record in order, decoded. Raises ``AuditError`` where the log is damaged."""
    try:
        for rec in fmt.walk(Path(directory), require_genesis=require_genesis):
            yield DecodedRecord(rec.seq, rec.hash.hex(), rec.decode())
    except fmt.ChainError as exc:
        raise AuditError(f"audit log is damaged: {exc}") from None
    except ValueError as exc:
        raise AuditError(f"audit log {directory}: undecodable payload: {exc}") from None
    except OSError as exc:
        raise AuditError(f"cannot read audit log {directory}: {exc}") from None
