"""Opening a log after a stop or a crash: walk it, refuse corruption, cut a torn tail.

A crash can leave a torn last frame (a write the kernel never finished) and a temporary
segment of an unfinished rotation; neither was ever acknowledged (no fsync returned for
it), so both are removed and the cut is described in a ``repair`` record. Anything else
that fails to verify is damage and the log refuses to open, naming file and offset; an
operator may cut damage at the end of the log (``edgewarden audit repair``), but never a
record that left the box in an export or an exported checkpoint.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgewarden.gateway.audit import record as fmt
from edgewarden.gateway.audit.checkpoint import KIND as CHECKPOINT_KIND
from edgewarden.gateway.audit.files import EXPORTED_NAME, fsync_dir, read_exported_marker
from edgewarden.gateway.errors import AuditError

_CUT_SAMPLE = 4096  # bytes of a cut torn tail kept (base64) in the repair record


@dataclass(frozen=True, slots=True)
class Recovered:
    """Where the writer takes over: the chain's state and the segment to append to."""

    next_seq: int
    head: bytes
    last_checkpoint_seq: int | None  # the last record's seq when it is a checkpoint
    segment: Path | None  # None: the directory holds no segment yet
    segment_size: int
    repair: dict[str, Any] | None  # payload of the ``repair`` record to append, if anything was cut
    hash_at: bytes | None = None  # the hash of the record at ``recover(hash_at=...)``, if the log holds it


def recover(directory: Path, *, repair_damaged_tail: bool, checkpoint_export: Path | None,
            hash_at: int | None = None) -> Recovered:
    """Verify the log in ``directory`` and make it appendable; ``AuditError`` when it is
    damaged. ``hash_at``: a seq whose record's hash to report (the high-water mark's)."""
    removed = []
    try:
        for tmp in sorted(directory.glob("*" + fmt.SEGMENT_SUFFIX + ".tmp")):
            tmp.unlink()  # a rotation that crashed before its rename: never part of the log
            removed.append(tmp.name)
        state = fmt.WalkState()
        last: fmt.Record | None = None
        found: bytes | None = None
        for last in fmt.walk(directory, state, tolerate_torn_tail=True, tolerate_damaged_tail=repair_damaged_tail):
            if last.seq == hash_at:
                found = last.hash
    except fmt.ChainError as exc:
        hint = (f"; if it is damage to the last records (keep a copy of the directory first), "
                f"`edgewarden audit repair {directory}` cuts them, unless they were exported"
                if exc.damaged_tail else "")
        raise AuditError(f"audit log is damaged, refusing to start (possible tampering): {exc}{hint}") from None
    except OSError as exc:
        raise AuditError(f"cannot read audit log {directory}: {exc}") from None
    repair: dict[str, Any] | None = None
    try:
        if state.torn is not None:
            _refuse_cutting_exported(directory, state.torn, checkpoint_export)
            repair = _cut_tail(state.torn)
        if removed:
            fsync_dir(directory)
            repair = repair or {"reason": "leftover temporary segment"}
            repair["removed_files"] = removed
    except OSError as exc:
        raise AuditError(f"cannot repair audit log {directory}: {exc}") from None
    checkpoint = last.seq if last is not None and _kind_of(last) == CHECKPOINT_KIND else None
    return Recovered(next_seq=state.next_seq, head=state.head, last_checkpoint_seq=checkpoint,
                     segment=state.segments[-1] if state.segments else None,
                     segment_size=state.end_offset, repair=repair, hash_at=found)


def _refuse_cutting_exported(directory: Path, torn: fmt.TornTail, checkpoint_export: Path | None) -> None:
    """A record that left the box (an export, an exported checkpoint) was durable: damage
    there is never a crash tail, and cutting it would make every copy outside contradict
    the log for good."""
    through, source = read_exported_marker(directory), f"{EXPORTED_NAME} marks it exported"
    if checkpoint_export is not None:
        try:
            line, _ = fmt.tail_lines(checkpoint_export)
            ckpt_record = json.loads(line)["seq"] + 1 if line else 0  # the checkpoint's own record
        except (OSError, ValueError, KeyError, TypeError):
            ckpt_record = 0  # no readable export: the marker alone decides
        if isinstance(ckpt_record, int) and ckpt_record > through:
            through, source = ckpt_record, f"a checkpoint in {checkpoint_export} covers it"
    if torn.seq <= through:
        raise AuditError(
            f"audit log is damaged, refusing to start: {torn.path}, offset {torn.offset}, seq {torn.seq}: "
            f"{torn.reason}; the record was exported ({source}, through seq {through}), so this is "
            f"damage, not a crash, and it is not cut: keep the directory as evidence and give the "
            f"gateway a new [audit] dir")


def _cut_tail(torn: fmt.TornTail) -> dict[str, Any]:
    with open(torn.path, "r+b") as f:
        f.seek(torn.offset)
        cut = f.read()
        f.truncate(torn.offset)
        f.flush()
        os.fsync(f.fileno())
    return {
        "reason": ("torn tail after the last valid record" if torn.crash
                   else "operator repair: damaged tail after the last valid record"),
        "file": torn.path.name,
        "offset": torn.offset,
        "cut_bytes": len(cut),
        "cut_sha256": hashlib.sha256(cut).hexdigest(),
        "cut_head_b64": base64.b64encode(cut[:_CUT_SAMPLE]).decode("ascii"),
        "damage": torn.reason,
    }


def _kind_of(rec: fmt.Record) -> object:
    try:
        return rec.decode().get("kind")
    except ValueError:
        return None
