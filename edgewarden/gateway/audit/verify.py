"""Checking and reading an audit log without trusting whoever wrote it.

:func:`verify` walks every segment and record: header, framing, crc, sequence
continuity and the SHA-256 chain, within and across segments, from the genesis record
(or from the start a ``retention`` record names, for a log whose oldest segments were
deleted). Every ``checkpoint`` record must cover the record just before it; with a
public key its signature must be good and at least one must exist. Checkpoints exported
off the box (``checkpoints``) must each match the log: a log cut short past the last
exported checkpoint, or rewritten, fails. It does not repair anything; a torn tail left
by a crash is reported (the writer repairs it, with a ``repair`` record, the next time
it opens the log).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edgewarden.gateway.audit import checkpoint as ck
from edgewarden.gateway.audit import record as fmt
from edgewarden.gateway.errors import AuditError


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    records: int  # records checked and found intact (all of them when ok)
    first_seq: int | None
    last_seq: int | None  # last intact record
    head: str  # hex SHA-256 of the last intact record (64 zeros for an empty log)
    segments: int
    error: str | None  # the first bad record: file, offset, seq and what broke
    checkpoints: int = 0  # checkpoint records found intact
    signed_through: int | None = None  # seq covered by the last checkpoint (signature checked with a key)
    exported_checked: int = 0  # exported checkpoints matched against the log


@dataclass(frozen=True, slots=True)
class DecodedRecord:
    seq: int
    hash: str  # hex SHA-256 of the record body
    payload: dict[str, Any]
    prev_hash: str = ""  # hex hash of the record before it (the chain link)


def verify(directory: Path, *, require_genesis: bool = True, pubkey: Ed25519PublicKey | None = None,
           checkpoints: list[ck.Checkpoint] | None = None) -> VerifyResult:
    """Check the whole log in ``directory``. Never raises for a damaged log: see ``error``."""
    directory = Path(directory)
    if not directory.is_dir():
        return VerifyResult(False, 0, None, None, fmt.GENESIS_HASH.hex(), 0, f"{directory}: not a directory")
    state = fmt.WalkState()
    error: str | None = None
    records, first_seq, last_seq, head = 0, None, None, fmt.GENESIS_HASH
    n_ckpt, signed_through, exported_checked = 0, None, 0
    exported = sorted(checkpoints or [], key=lambda c: c.seq)
    want = {c.seq: c for c in exported}
    want_record = {c.seq + 1: c for c in exported}  # the checkpoint record itself
    try:
        for rec in fmt.walk(directory, state, require_genesis=require_genesis):
            try:
                payload = rec.decode()
            except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
                raise fmt.ChainError(rec.path, rec.offset, rec.seq, f"payload is not a JSON object: {exc}") from None
            problem = _missing_fields(payload)
            if problem is not None:
                raise fmt.ChainError(rec.path, rec.offset, rec.seq, problem)
            kind = payload["kind"]
            if kind == ck.KIND:
                problem = _check_checkpoint(payload, rec, pubkey)
                if problem is not None:
                    raise fmt.ChainError(rec.path, rec.offset, rec.seq, f"checkpoint record: {problem}")
                n_ckpt += 1
                if pubkey is not None:
                    signed_through = rec.seq - 1
            cp = want_record.get(rec.seq)
            if cp is not None and (kind != ck.KIND or payload.get("sig") != cp.sig):
                raise fmt.ChainError(rec.path, rec.offset, rec.seq,
                                     f"not the checkpoint record exported for seq {cp.seq}: rewritten")
            cp = want.get(rec.seq)
            if cp is not None:
                if cp.head != rec.hash.hex():
                    raise fmt.ChainError(rec.path, rec.offset, rec.seq,
                                         f"hash differs from the exported checkpoint ({cp.head[:16]}…): rewritten")
                exported_checked += 1
            records, last_seq, head = records + 1, rec.seq, rec.hash
            first_seq = rec.seq if first_seq is None else first_seq
        error = _check_exported(exported, pubkey, state, first_seq, last_seq, directory)
        if error is None and pubkey is not None and records and n_ckpt == 0:
            error = f"{directory}: no checkpoint in the log: nothing here is signed by the given key"
    except fmt.ChainError as exc:
        error = str(exc)
        if exc.torn:
            error += (" (looks like a crash tail: the writer cuts it, with a repair record, on its next open, "
                      "unless the record was exported)")
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
        checkpoints=n_ckpt,
        signed_through=signed_through,
        exported_checked=exported_checked,
    )


def _missing_fields(payload: dict[str, Any]) -> str | None:
    """Rule 6: every record names its kind and when it was made."""
    kind = payload.get("kind")
    if not isinstance(kind, str) or not kind:
        return "payload has no kind (a non-empty string)"
    for field in ("t_wall", "t_mono"):
        v = payload.get(field)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return f"payload has no {field} (a number)"
    return None


def _check_checkpoint(payload: dict[str, Any], rec: fmt.Record, pubkey: Ed25519PublicKey | None) -> str | None:
    try:
        cp = ck.Checkpoint.from_dict(payload)
    except ValueError as exc:
        return str(exc)
    if cp.seq != rec.seq - 1 or cp.head != rec.prev_hash.hex():
        return f"covers seq {cp.seq} / {cp.head[:16]}…, not the record before it"
    return cp.verify(pubkey) if pubkey is not None else None


def _check_exported(exported: list[ck.Checkpoint], pubkey: Ed25519PublicKey | None, state: fmt.WalkState,
                    first_seq: int | None, last_seq: int | None, directory: Path) -> str | None:
    for cp in exported:
        if pubkey is not None:
            problem = cp.verify(pubkey)
            if problem is not None:
                return f"exported checkpoint for seq {cp.seq}: {problem}"
        if last_seq is None or cp.seq + 1 > last_seq:  # the covered record and the checkpoint's own
            end = "is empty" if last_seq is None else f"ends at seq {last_seq}"
            return (f"{directory}: the log {end} but a checkpoint was exported for seq {cp.seq} "
                    f"(written as record {cp.seq + 1}): records after seq {last_seq or 0} were removed "
                    f"(truncation)")
        # seq in [first_seq, last_seq] was compared during the walk; below first_seq the
        # records were deleted by retention and there is nothing to compare.
    return None


def iter_records(directory: Path, *, require_genesis: bool = True) -> Iterator[DecodedRecord]:
    """Yield every record in order, decoded. Raises ``AuditError`` where the log is damaged."""
    directory = Path(directory)
    try:
        for rec in fmt.walk(directory, require_genesis=require_genesis):
            yield DecodedRecord(rec.seq, rec.hash.hex(), rec.decode(), rec.prev_hash.hex())
    except fmt.ChainError as exc:
        raise AuditError(f"audit log is damaged: {exc}") from None
    except ValueError as exc:
        raise AuditError(f"audit log {directory}: undecodable payload: {exc}") from None
    except OSError as exc:
        raise AuditError(f"cannot read audit log {directory}: {exc}") from None
