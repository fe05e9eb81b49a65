"""The on-disk format of the audit log: segment headers, framed records, canonical JSON.

Everything here is pure (bytes in, bytes out) except :func:`walk`, which reads a log
directory and checks it record by record. The format is specified for outsiders in
``docs/audit-format.md``; keep the two in step.

Layout (all integers big-endian)::

    segment  = header record*
    header   = "EWAUDIT1" | u32 version | u64 first_seq | prev_hash[32] | u32 crc32(header[0:52])
    record   = u32 length | u32 crc32(body) | body          (length = len(body))
    body     = u64 seq | prev_hash[32] | payload             (payload: canonical JSON, UTF-8)
    hash     = SHA-256(body)                                 (genesis prev_hash: 32 zero bytes)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from edgewarden.gateway.errors import AuditError

MAGIC = b"EWAUDIT1"
FORMAT_VERSION = 1
GENESIS_HASH = bytes(32)
FIRST_SEQ = 1

HEADER = struct.Struct(">8sIQ32s")  # magic, version, first_seq, prev_hash (52 bytes)
HEADER_SIZE = HEADER.size + 4  # + u32 crc32 of the 52 bytes before it
FRAME_HEAD = struct.Struct(">II")  # length of body, crc32 of body
SEQ = struct.Struct(">Q")
BODY_MIN = SEQ.size + 32  # seq + prev_hash; an empty payload is not valid JSON but frames allow it
MAX_BODY = 16 * 1024 * 1024  # a record larger than this is refused on write and corrupt on read

SEGMENT_SUFFIX = ".seg"
_SEGMENT_NAME = re.compile(r"^(\d{20})\.seg$")

# Non-finite floats are recorded, not refused: a NaN reading is exactly what an audit
# must keep. They become these strings (so "NaN" the string and NaN the float read back
# the same; the record still shows which tag carried it).
_NONFINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}

# orjson: sorted keys, compact, raw UTF-8, numpy arrays natively; ~1 us for a 300-byte
# record against ~6 us for the standard library's C encoder. It writes NaN/inf as null,
# so non-finite floats are looked for whenever the output holds a null (below).
_ORJSON_OPTS = orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY

# The standard library encoder takes what orjson refuses (integers beyond 64 bits,
# non-string keys, nesting deeper than 254) and gives the errors for what JSON cannot hold.
_ENCODER = json.JSONEncoder(
    sort_keys=True,
    separators=(",", ":"),
    ensure_ascii=False,
    allow_nan=False,
    default=lambda o: _to_builtin(o),
)


def _to_builtin(obj: Any) -> Any:
    """JSON fallback for numpy scalars/arrays (anything with ``tolist``) and sets."""
    tolist = getattr(obj, "tolist", None)
    if tolist is not None:
        return tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"audit payload value of type {type(obj).__name__} is not JSON-encodable")


def _replace_nonfinite(obj: Any) -> Any:
    if isinstance(obj, float):
        if math.isnan(obj):
            return "NaN"
        return _NONFINITE.get(obj, obj)
    if isinstance(obj, dict):
        return {k: _replace_nonfinite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_replace_nonfinite(v) for v in (sorted(obj) if isinstance(obj, (set, frozenset)) else obj)]
    tolist = getattr(obj, "tolist", None)
    if tolist is not None:
        return _replace_nonfinite(tolist())
    return obj


def _may_hold_nonfinite(obj: Any) -> bool:
    """True if ``obj`` holds a NaN or infinite float anywhere (and, rarely, when it does not).

    A container of numbers is judged by its sum in C: a NaN or ±inf in it makes the sum
    non-finite (inf - inf is NaN), so nothing is missed; finite values that overflow the
    sum only cost a needless rewrite. Containers with other values are walked, with the
    common leaves (str, int, bool, None, float) judged in place: a cycle record is a flat
    dict of those and lists of floats, and its ``null``s (a field not set) make this run
    every cycle.
    """
    if isinstance(obj, float):
        return not math.isfinite(obj)
    if isinstance(obj, dict):
        obj = obj.values()  # mostly strings and numbers: walked, not summed
    elif not isinstance(obj, (list, tuple, set, frozenset)):
        tolist = getattr(obj, "tolist", None)
        return tolist is not None and _may_hold_nonfinite(tolist())
    else:
        try:
            return not math.isfinite(sum(obj))
        except (TypeError, OverflowError):
            pass
    for v in obj:
        kind = type(v)
        if v is None or kind is str or kind is int or kind is bool:
            continue
        if kind is float:
            if not math.isfinite(v):
                return True
        elif _may_hold_nonfinite(v):
            return True
    return False


def _encode_stdlib(payload: dict[str, Any]) -> bytes:
    try:
        text = _ENCODER.encode(payload)
    except ValueError:  # allow_nan=False: a non-finite float
        text = _ENCODER.encode(_replace_nonfinite(payload))
    return text.encode("utf-8")


def encode_payload(payload: dict[str, Any]) -> bytes:
    """Canonical JSON of ``payload``: sorted keys, no spaces, UTF-8, NaN/inf as strings.

    Raises ``TypeError``, ``ValueError`` or ``RecursionError`` for values JSON cannot hold.
    """
    try:
        out = orjson.dumps(payload, default=_to_builtin, option=_ORJSON_OPTS)
    except TypeError:  # orjson.JSONEncodeError: let the standard library take it or explain
        return _encode_stdlib(payload)
    if b"null" in out and _may_hold_nonfinite(payload):
        out = orjson.dumps(_replace_nonfinite(payload), default=_to_builtin, option=_ORJSON_OPTS)
    return out


def _not_json(token: str) -> Any:
    raise ValueError(f"{token} is not JSON (non-finite numbers are stored as strings)")


def decode_payload(payload: bytes) -> dict[str, Any]:
    """The payload as a dict. Raises ``ValueError`` for anything but strict JSON (RFC 8259:
    no bare ``NaN``/``Infinity``) whose top level is an object."""
    value = json.loads(payload.decode("utf-8"), parse_constant=_not_json)
    if not isinstance(value, dict):
        raise ValueError("payload is not a JSON object")
    return value


def encode_body(seq: int, prev_hash: bytes, payload: bytes) -> bytes:
    return SEQ.pack(seq) + prev_hash + payload


def encode_frame(seq: int, prev_hash: bytes, payload: bytes) -> tuple[bytes, bytes]:
    """One framed record and its hash: ``(frame_bytes, sha256(body))``."""
    body = SEQ.pack(seq) + prev_hash + payload
    if len(body) > MAX_BODY:
        raise ValueError(f"audit record {seq} is {len(body)} bytes; the limit is {MAX_BODY}")
    return FRAME_HEAD.pack(len(body), zlib.crc32(body)) + body, hashlib.sha256(body).digest()


def pack_header(first_seq: int, prev_hash: bytes) -> bytes:
    head = HEADER.pack(MAGIC, FORMAT_VERSION, first_seq, prev_hash)
    return head + struct.pack(">I", zlib.crc32(head))


def tail_lines(path: Path) -> tuple[bytes | None, bytes]:
    """``(last complete line, bytes after it)`` of a JSON-lines file, read from its end:
    ``(None, b"")`` for an empty file; raises ``OSError`` (``FileNotFoundError``...)."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        tail = b""
        while size > 0 and tail.count(b"\n") < 2:
            step = min(size, 65536)
            size -= step
            f.seek(size)
            tail = f.read(step) + tail
    complete, sep, partial = tail.rpartition(b"\n")
    if not sep:
        return None, partial
    return complete.rsplit(b"\n", 1)[-1], partial


def segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}{SEGMENT_SUFFIX}"


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """``(first_seq, path)`` of every segment file, in sequence order. Other files are ignored."""
    found = []
    for path in directory.iterdir():
        m = _SEGMENT_NAME.match(path.name)
        if m:
            found.append((int(m.group(1)), path))
    found.sort()
    return found


@dataclass(frozen=True, slots=True)
class Record:
    """One record as read back: where it lies, its chain links, and its payload."""

    seq: int
    hash: bytes
    prev_hash: bytes
    payload: bytes  # the canonical JSON exactly as stored (what the hash covers)
    path: Path
    offset: int

    def decode(self) -> dict[str, Any]:
        return decode_payload(self.payload)


class ChainError(AuditError):
    """The log is not intact at ``path``/``offset``. ``torn`` marks a repairable crash tail."""

    def __init__(self, path: Path, offset: int, seq: int | None, reason: str, *, torn: bool = False,
                 damaged_tail: bool = False):
        where = f"{path}, offset {offset}" + (f", seq {seq}" if seq is not None else "")
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.offset = offset
        self.seq = seq
        self.reason = reason
        self.torn = torn
        self.damaged_tail = damaged_tail  # damage after the last valid record, none follows


@dataclass(slots=True)
class TornTail:
    """Bytes after the last valid record of the last segment: what a crash left behind
    (``crash``), or damage an operator chose to cut."""

    path: Path
    offset: int
    length: int
    reason: str
    seq: int  # the seq the damaged frame would have carried
    crash: bool = True


@dataclass(slots=True)
class WalkState:
    """What :func:`walk` learned; filled in as it goes, complete when it finishes."""

    segments: list[Path] = field(default_factory=list)
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None  # None while no record was seen
    next_seq: int = FIRST_SEQ
    head: bytes = GENESIS_HASH
    end_offset: int = 0  # end of the last valid record (or header) in the last segment
    torn: TornTail | None = None


def _check_header(path: Path, data: bytes, expected_seq: int | None, expected_prev: bytes | None,
                  named_seq: int) -> tuple[int, bytes]:
    if len(data) < HEADER_SIZE:
        raise ChainError(path, 0, None, f"segment header truncated ({len(data)} bytes)")
    magic, version, first_seq, prev = HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise ChainError(path, 0, None, f"bad magic {magic!r}")
    (crc,) = struct.unpack_from(">I", data, HEADER.size)
    if zlib.crc32(data[: HEADER.size]) != crc:
        raise ChainError(path, 0, None, "segment header crc mismatch")
    if version != FORMAT_VERSION:
        raise ChainError(path, 0, None, f"format version {version} not supported (expected {FORMAT_VERSION})")
    if first_seq != named_seq:
        raise ChainError(path, 0, None, f"header first_seq {first_seq} does not match file name")
    if expected_seq is not None and first_seq != expected_seq:
        raise ChainError(path, 0, None, f"segment starts at seq {first_seq}, expected {expected_seq}")
    if expected_prev is not None and prev != expected_prev:
        raise ChainError(path, 0, None, "segment header prev_hash does not match the chain head")
    return first_seq, prev


def _later_valid_frame(data: bytes, after: int, seqs: tuple[int, ...]) -> int | None:
    """Offset of a CRC-valid frame carrying one of ``seqs`` that starts after ``after``."""
    for seq in seqs:
        pattern = SEQ.pack(seq)
        pos = data.find(pattern, after + FRAME_HEAD.size + 1)
        while pos != -1:
            start = pos - FRAME_HEAD.size
            length, crc = FRAME_HEAD.unpack_from(data, start)
            end = pos + length
            if BODY_MIN <= length <= MAX_BODY and end <= len(data) and zlib.crc32(data[pos:end]) == crc:
                return start
            pos = data.find(pattern, pos + 1)
    return None


_CRC_MISMATCH = "crc mismatch"


def walk(directory: Path, state: WalkState | None = None, *, tolerate_torn_tail: bool = False,
         tolerate_damaged_tail: bool = False, require_genesis: bool = True) -> Iterator[Record]:
    """Yield every record of the log in order, checking everything on the way.

    Raises :class:`ChainError` at the first problem: header, framing, crc, sequence gap,
    or broken hash chain (inside a segment or across segments). With
    ``tolerate_torn_tail``, damage after the last valid record of the *last* segment is
    accepted and described in ``state.torn`` when it looks like a crash: the damaged
    frame is incomplete (too short, runs past the end of the file, or has a length out
    of range), and no complete frame continuing the chain follows it. With
    ``tolerate_damaged_tail`` (an operator's explicit repair) any damage there that no
    valid frame follows is accepted the same way. A complete frame that does not chain,
    or damage anywhere else, is always an error.
    """
    st = state if state is not None else WalkState()
    segments = list_segments(directory)
    # a log whose oldest segments retention deleted starts where a retention record says
    pruned = require_genesis and bool(segments) and segments[0][0] != FIRST_SEQ
    starts: set[tuple[object, object]] = set()
    log_start: tuple[object, object] = (None, None)
    expected_seq: int | None = FIRST_SEQ if require_genesis and not pruned else None
    expected_prev: bytes | None = GENESIS_HASH if require_genesis and not pruned else None
    for index, (named_seq, path) in enumerate(segments):
        last_segment = index == len(segments) - 1
        data = path.read_bytes()
        first_seq, prev = _check_header(path, data, expected_seq, expected_prev, named_seq)
        st.segments.append(path)
        seq, head, offset = first_seq, prev, HEADER_SIZE
        end = len(data)
        while offset < end:
            problem: str | None = None
            if end - offset < FRAME_HEAD.size + BODY_MIN:
                problem = f"truncated frame ({end - offset} bytes left)"
            else:
                length, crc = FRAME_HEAD.unpack_from(data, offset)
                body_end = offset + FRAME_HEAD.size + length
                if length < BODY_MIN or length > MAX_BODY:
                    problem = f"bad frame length {length}"
                elif body_end > end:
                    problem = f"frame of {length} bytes runs past the end of the file"
                else:
                    body = data[offset + FRAME_HEAD.size : body_end]
                    if zlib.crc32(body) != crc:
                        problem = _CRC_MISMATCH
            if problem is not None:
                torn = damaged_tail = False
                if last_segment:
                    later = _later_valid_frame(data, offset, (seq, seq + 1))
                    if later is None:
                        damaged_tail = True
                        # a crash leaves a prefix of what was being written (or, where the
                        # file grew before its data reached the disk, zeros or stale
                        # blocks: no frame); a complete frame failing its crc is damage
                        torn = problem != _CRC_MISMATCH
                        if not torn:
                            problem += " (a complete frame: damage, not a crash tail)"
                    else:
                        problem += f" (a complete record follows at offset {later}: not a crash tail)"
                if (torn and tolerate_torn_tail) or (damaged_tail and tolerate_damaged_tail):
                    st.torn = TornTail(path, offset, end - offset, problem, seq, crash=torn)
                    break
                raise ChainError(path, offset, seq, problem, torn=torn, damaged_tail=damaged_tail)
            (got_seq,) = SEQ.unpack_from(body, 0)
            if got_seq != seq:
                raise ChainError(path, offset, got_seq, f"sequence {got_seq} where {seq} was expected")
            if body[SEQ.size:BODY_MIN] != head:
                raise ChainError(path, offset, seq, "prev_hash does not match the previous record's hash")
            digest = hashlib.sha256(body).digest()
            if pruned and b"retention" in body:
                _note_retention_start(body[BODY_MIN:], starts)
            yield Record(seq, digest, head, body[BODY_MIN:], path, offset)
            if st.first_seq is None:
                st.first_seq = seq
            st.last_seq = seq
            st.records += 1
            st.head = head = digest
            seq += 1
            offset = body_end
        expected_seq, expected_prev = seq, head
        st.next_seq, st.head, st.end_offset = seq, head, offset
        if index == 0:
            log_start = (first_seq, prev.hex())
    if pruned and log_start not in starts:
        raise ChainError(segments[0][1], 0, segments[0][0],
                         "log does not start at seq 1 and no retention record explains its start")


def _note_retention_start(payload: bytes, starts: set[tuple[object, object]]) -> None:
    try:
        p = decode_payload(payload)
    except ValueError:
        return  # not a retention record: the caller decodes and judges every payload
    if p.get("kind") == "retention":
        starts.add((p.get("first_seq_kept"), p.get("prev_hash")))
