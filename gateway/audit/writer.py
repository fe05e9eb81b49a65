"""The audit writer: append from the control cycle without touching the disk.

The caller's side of :meth:`AuditWriter.append` takes two timestamps, encodes the payload
as canonical JSON (orjson: cheaper than any deep copy, so the caller may reuse its dicts
and arrays at once and sees encoding errors itself, before a sequence number is handed
out), assigns the sequence number and puts the bytes on a
list. A writer thread does the rest: framing, chaining (SHA-256), write and fsync, once
per ``commit_interval_s`` for everything pending (group commit).

Signed checkpoints (optional, ``signer``): when ``checkpoint_every_records`` records or
``checkpoint_every_s`` seconds have passed since the last one, the writer thread adds a
``checkpoint`` record to the group it is committing (the sequence number is taken under
the same lock that drained the group, so nothing interleaves), signs (seq, head, time)
of the record before it, and after the fsync appends the checkpoint as a JSON line to
``checkpoint_export`` (fsynced) and hands it to ``on_checkpoint``. A clean close always
ends with a checkpoint. Export failures are counted, never fatal: the log itself is
intact, only the outside anchor is missing.

Rotation happens by size (``segment_max_bytes``) and by age (``segment_max_age_s``).
Retention (``retention_max_segments``, ``retention_max_bytes``, ``retention_max_age_s``)
deletes whole old segments after a rotation, but only segments every record of which is
at or below ``through_seq`` of the ``exported.json`` marker that ``edgewarden audit
export`` writes. A segment that is over a limit but not exported is kept and counted in
:attr:`AuditStats.retention_blocked`. Each deletion is recorded in a ``retention``
record naming the files and the new start of the log.

Failure is one-way: the first write, fsync or rotation error makes :attr:`failed` the
``AuditError``, calls ``on_fatal`` once (from the writer thread: the gateway must hand
it to its loop with ``call_soon_threadsafe``) and every later append raises. A failed
fsync is never retried: after it the kernel may have dropped the dirty pages.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.audit import record as fmt
from gateway.audit.checkpoint import KIND as CHECKPOINT_KIND
from gateway.audit.checkpoint import Checkpoint, Signer
from gateway.errors import AuditError

_ENCODED = 1  # item payload is canonical JSON, encoded on the caller's side
_CHECKPOINT = 2  # a checkpoint to sign when its predecessor's hash is known
_OWNED = 3  # item payload is the caller's dict, handed over, encoded on the writer thread
_SLICE = 4096  # records encoded before they are written, within one commit
_YIELD_EVERY = 16  # records framed between GIL yields
_CUT_SAMPLE = 4096  # bytes of a cut torn tail kept (base64) in the repair record
LOCK_NAME = ".lock"
EXPORTED_NAME = "exported.json"  # the export marker: {"through_seq": N, ...}

# (seq, kind, t_wall, t_mono, how, blob): one appended record waiting for the writer
_Item = tuple[int, str, float, float, int, Any]  # payload: bytes (encoded), or the dict (_OWNED)


@dataclass(frozen=True, slots=True)
class AuditStats:
    """Counters for metrics. Latencies in seconds; ``pending`` is records not yet written."""

    records_written: int
    bytes_written: int
    commits: int
    last_commit_latency_s: float
    max_commit_latency_s: float
    pending: int
    last_seq: int  # last sequence number handed out (0 before the first)
    durable_seq: int  # every record up to this one is fsynced
    segments_created: int
    checkpoints: int = 0  # checkpoints written into the log
    last_checkpoint_seq: int = 0  # seq covered by the last one
    checkpoint_export_errors: int = 0  # checkpoints not exported (file or on_checkpoint failed)
    segments_deleted: int = 0  # by retention
    retention_blocked: int = 0  # segments over a retention limit kept because not exported
    retention_errors: int = 0  # retention passes that failed (segments kept)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _drop_torn_line(fd: int) -> None:
    """Cut a last line without its newline (a crash mid-export) so the next line starts clean."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    tail = os.pread(fd, min(size, 65536), max(0, size - 65536))
    cut = tail.rfind(b"\n")
    os.ftruncate(fd, (size - len(tail)) + cut + 1 if cut >= 0 else max(0, size - len(tail)))


def _encode_owned(seq: int, kind: str, t_wall: float, t_mono: float, payload: dict[str, Any]) -> bytes:
    """An :meth:`AuditWriter.append_owned` payload, or its ``audit_encode_error`` stand-in."""
    try:
        blob = fmt.encode_payload({"t_wall": t_wall, "t_mono": t_mono, **payload, "kind": kind})
        if fmt.SEQ.size + 32 + len(blob) <= fmt.MAX_BODY:
            return blob
        error = f"{len(blob)} bytes of payload; the limit is {fmt.MAX_BODY - fmt.SEQ.size - 32}"
    except (TypeError, ValueError, RecursionError) as exc:
        error = str(exc)
    return fmt.encode_payload({"t_wall": t_wall, "t_mono": t_mono, "kind": "audit_encode_error",
                               "of_kind": kind, "error": f"record {seq} ({kind!r}) cannot be encoded: {error}"})


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class AuditWriter:
    """Append-only, hash-chained, group-committed audit log in ``directory``.

    One producer thread (the event loop) may call :meth:`append`; :meth:`append_durable`
    may also be called from other threads. Use as a context manager or call
    :meth:`open` / :meth:`close`.

    ``commit_interval_s``: group-commit period (write + fsync of everything pending);
    durable appends and :meth:`flush` commit at once. ``segment_max_bytes``: rotate
    before a record would take a segment past this. ``on_fatal(err)``: called once, from
    the writer thread (or the caller's, for a backlog overflow), when the log can no
    longer be written. ``max_pending``: records allowed to wait for the writer before
    that is fatal (the disk cannot keep up). ``on_commit(latency_s, records, bytes)``:
    called from the writer thread after each commit, for metrics; latency is the write
    and fsync time of the group. An exception from it is fatal like a write error.
    """

    def __init__(
        self,
        directory: Path,
        *,
        commit_interval_s: float = 0.01,
        segment_max_bytes: int = 64 * 1024 * 1024,
        on_fatal: Callable[[AuditError], None] | None = None,
        max_pending: int = 1_000_000,
        on_commit: Callable[[float, int, int], None] | None = None,
        signer: Signer | None = None,
        checkpoint_every_records: int = 10_000,
        checkpoint_every_s: float = 60.0,
        checkpoint_export: Path | None = None,
        on_checkpoint: Callable[[Checkpoint], None] | None = None,
        segment_max_age_s: float | None = None,
        retention_max_segments: int | None = None,
        retention_max_bytes: int | None = None,
        retention_max_age_s: float | None = None,
    ) -> None:
        if commit_interval_s <= 0:
            raise ValueError("commit_interval_s must be > 0")
        if segment_max_bytes < fmt.HEADER_SIZE + 1024:
            raise ValueError(f"segment_max_bytes must be at least {fmt.HEADER_SIZE + 1024}")
        if checkpoint_every_records < 1 or checkpoint_every_s <= 0:
            raise ValueError("checkpoint_every_records must be >= 1 and checkpoint_every_s > 0")
        if retention_max_segments is not None and retention_max_segments < 2:
            raise ValueError("retention_max_segments must be at least 2")
        self.directory = Path(directory)
        self.signer = signer
        self.checkpoint_every_records = checkpoint_every_records
        self.checkpoint_every_s = checkpoint_every_s
        self.checkpoint_export = Path(checkpoint_export) if checkpoint_export is not None else None
        self._on_checkpoint = on_checkpoint
        self.segment_max_age_s = segment_max_age_s
        self.retention_max_segments = retention_max_segments
        self.retention_max_bytes = retention_max_bytes
        self.retention_max_age_s = retention_max_age_s
        self.commit_interval_s = commit_interval_s
        self.segment_max_bytes = segment_max_bytes
        self.max_pending = max_pending
        self._on_fatal = on_fatal
        self._on_commit = on_commit  # (latency_s, records, bytes) per commit, writer thread
        # producer side, guarded by _lock
        self._lock = threading.Lock()
        self._pending: list[_Item] = []
        self._next_seq = fmt.FIRST_SEQ
        self._open = False
        self._closing = False
        # durability, guarded by _cond
        self._cond = threading.Condition()
        self._durable_seq = 0
        self._async_waiters: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[int]]] = []
        self._failed: AuditError | None = None
        self._fatal_reported = False
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        # writer-thread state
        self._head = fmt.GENESIS_HASH
        self._fd = -1
        self._lock_fd = -1
        self._seg_path: Path | None = None
        self._seg_size = 0
        # stats (written by the writer thread, read anywhere)
        self._records_written = 0
        self._bytes_written = 0
        self._commits = 0
        self._last_latency = 0.0
        self._max_latency = 0.0
        self._segments_created = 0
        self._seg_started = time.monotonic()
        # checkpoints: covered seq / time of the last one (drain side, writer thread)
        self._ckpt_covered = 0
        self._ckpt_record = 0
        self._ckpt_time = time.monotonic()
        self._checkpoints = 0
        self._export_errors = 0
        self._segments_deleted = 0
        self._retention_blocked = 0
        self._retention_errors = 0
        self.repaired: dict[str, Any] | None = None  # the repair record of the last open, if any

    # ----------------------------------------------------------------- lifecycle
    def open(self, *, repair_damaged_tail: bool = False) -> AuditWriter:
        """Recover the log (repair a torn tail, refuse corruption) and start the writer.

        Raises ``AuditError`` naming file and offset when the log is damaged anywhere but
        in a crash tail, when the damaged tail holds a record that was exported (by
        ``audit export`` or as an exported checkpoint), or when another writer holds the
        directory. ``repair_damaged_tail`` (``edgewarden audit repair``, an operator's
        decision) also cuts damage at the end of the log that is not a crash tail, such
        as a complete last record failing its crc, unless it was exported.
        """
        if self._open:
            raise AuditError(f"audit log {self.directory} is already open")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._release_lock()
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise AuditError(f"audit log {self.directory} is open in another process") from None
            raise AuditError(f"cannot open audit log {self.directory}: {exc}") from None
        try:
            repair = self._recover(repair_damaged_tail)
        except BaseException:
            self._close_fds()
            raise
        self._open, self._closing = True, False
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()
        self.repaired = repair
        if repair is not None:
            self.append_durable("repair", repair)
        return self

    def _recover(self, repair_damaged_tail: bool) -> dict[str, Any] | None:
        removed = []
        for tmp in sorted(self.directory.glob("*" + fmt.SEGMENT_SUFFIX + ".tmp")):
            tmp.unlink()  # a rotation that crashed before its rename: never part of the log
            removed.append(tmp.name)
        state = fmt.WalkState()
        last: fmt.Record | None = None
        try:
            for last in fmt.walk(self.directory, state, tolerate_torn_tail=True,
                                 tolerate_damaged_tail=repair_damaged_tail):
                pass
        except fmt.ChainError as exc:
            hint = (f"; if it is damage to the last records (keep a copy of the directory first), "
                    f"`edgewarden audit repair {self.directory}` cuts them, unless they were exported"
                    if exc.damaged_tail else "")
            raise AuditError(f"audit log is damaged, refusing to start (possible tampering): {exc}{hint}") from None
        except OSError as exc:
            raise AuditError(f"cannot read audit log {self.directory}: {exc}") from None
        self._next_seq = state.next_seq
        self._durable_seq = state.next_seq - 1
        self._head = state.head
        if last is not None and _kind_of(last) == CHECKPOINT_KIND:
            self._ckpt_covered, self._ckpt_record = last.seq - 1, last.seq  # still anchored
        repair: dict[str, Any] | None = None
        try:
            if not state.segments:
                self._new_segment(fmt.FIRST_SEQ, fmt.GENESIS_HASH)
            else:
                path = state.segments[-1]
                if state.torn is not None:
                    self._refuse_cutting_exported(state.torn)
                    repair = self._cut_tail(state.torn)
                self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
                self._seg_path, self._seg_size = path, state.end_offset
            if removed:
                _fsync_dir(self.directory)
                repair = repair or {"reason": "leftover temporary segment"}
                repair["removed_files"] = removed
        except OSError as exc:
            raise AuditError(f"cannot repair audit log {self.directory}: {exc}") from None
        return repair

    def _refuse_cutting_exported(self, torn: fmt.TornTail) -> None:
        """A record that left the box (an export, an exported checkpoint) was durable:
        damage there is never a crash tail, and cutting it would make every copy outside
        contradict the log for good."""
        through, source = read_exported_marker(self.directory), f"{EXPORTED_NAME} marks it exported"
        if self.checkpoint_export is not None:
            try:
                line, _ = fmt.tail_lines(self.checkpoint_export)
                ckpt_record = json.loads(line)["seq"] + 1 if line else 0  # the checkpoint's own record
            except (OSError, ValueError, KeyError, TypeError):
                ckpt_record = 0  # no readable export: the marker alone decides
            if isinstance(ckpt_record, int) and ckpt_record > through:
                through, source = ckpt_record, f"a checkpoint in {self.checkpoint_export} covers it"
        if torn.seq <= through:
            raise AuditError(
                f"audit log is damaged, refusing to start: {torn.path}, offset {torn.offset}, seq {torn.seq}: "
                f"{torn.reason}; the record was exported ({source}, through seq {through}), so this is "
                f"damage, not a crash, and it is not cut: keep the directory as evidence and give the "
                f"gateway a new [audit] dir")

    def _cut_tail(self, torn: fmt.TornTail) -> dict[str, Any]:
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

    def close(self) -> None:
        """Write and fsync everything pending, stop the writer thread, release the log."""
        with self._lock:
            if not self._open or self._closing:
                return
            self._closing = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self._close_fds()
        self._open = False
        if self._failed is not None:
            raise self._failed

    def _close_fds(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = -1

    def __enter__(self) -> AuditWriter:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ producer
    @property
    def failed(self) -> AuditError | None:
        """The fatal error, once the log can no longer be written; None while healthy."""
        return self._failed

    @property
    def last_seq(self) -> int:
        return self._next_seq - 1

    def append(self, kind: str, payload: dict[str, Any]) -> int:
        """Queue one record and return its sequence number. Never blocks on I/O.

        ``payload`` may carry its own ``t_wall``/``t_mono`` (else they are taken now);
        ``kind`` is added by the writer and must not be in ``payload``. Raises
        :class:`AuditError` if the log is failed or closed, or ``payload`` cannot be encoded.
        """
        t_wall, t_mono = time.time(), time.monotonic()
        if "kind" in payload:
            raise ValueError("audit payload must not contain 'kind' (pass it as the kind argument)")
        try:  # here, where the caller sees the error, before a seq is handed out
            blob = fmt.encode_payload({"t_wall": t_wall, "t_mono": t_mono, **payload, "kind": kind})
        except (TypeError, ValueError, RecursionError) as exc:
            raise AuditError(f"audit record {kind!r} cannot be encoded: {exc}") from exc
        return self._enqueue(kind, t_wall, t_mono, _ENCODED, blob)

    def append_owned(self, kind: str, payload: dict[str, Any]) -> int:
        """Queue one record whose ``payload`` is handed over: encoded on the writer thread.

        For the control cycle: the hand-off is a lock and a list append, much cheaper than
        :meth:`append`'s encoding in a cycle that starts with cold caches
        (docs/performance.md, Audit log).
        The caller gives up ``payload`` (never changes it afterwards) and builds it from
        JSON types only (str, int, float, bool, None, and lists/dicts of them), as the
        cycle does. Should one still fail to encode, the writer records an
        ``audit_encode_error`` record in its place (same seq, kind and times, the message):
        the chain stays whole and the failure is on record.
        """
        return self._enqueue(kind, time.time(), time.monotonic(), _OWNED, payload)

    def _enqueue(self, kind: str, t_wall: float, t_mono: float, how: int, data: Any) -> int:
        """Hand one item to the writer thread under the next seq; refused (AuditError)
        when the log is failed or closed, and fatal when the writer is too far behind."""
        with self._lock:
            if self._failed is not None:
                raise self._failed
            if not self._open or self._closing:
                raise AuditError(f"audit log {self.directory} is not open")
            if len(self._pending) < self.max_pending:
                seq = self._next_seq
                self._next_seq = seq + 1
                self._pending.append((seq, kind, t_wall, t_mono, how, data))
                return seq
            err = AuditError(f"audit writer is {len(self._pending)} records behind; disk too slow")
        self._fail(err)
        raise err

    def append_durable(self, kind: str, payload: dict[str, Any], *, timeout: float | None = None) -> int:
        """Append and return only once the record is fsynced (for safety events).

        Blocks the calling thread; from asyncio use :meth:`append_durable_async`.
        """
        seq = self.append(kind, payload)
        self._wake.set()
        self._wait_durable(seq, timeout)
        return seq

    async def append_durable_async(self, kind: str, payload: dict[str, Any]) -> int:
        """Append now (in the loop's order) and resolve once the record is fsynced."""
        loop = asyncio.get_running_loop()
        seq = self.append(kind, payload)
        fut: asyncio.Future[int] = loop.create_future()
        with self._cond:
            if self._failed is not None:
                raise self._failed
            if self._durable_seq >= seq:
                return seq
            self._async_waiters.append((seq, loop, fut))
        self._wake.set()
        return await fut

    def flush(self, timeout: float | None = None) -> int:
        """Block until every record appended so far is fsynced; return that seq."""
        seq = self.last_seq
        self._wake.set()
        self._wait_durable(seq, timeout)
        return seq

    def _wait_durable(self, seq: int, timeout: float | None) -> None:
        with self._cond:
            ok = self._cond.wait_for(lambda: self._durable_seq >= seq or self._failed is not None, timeout)
            if self._failed is not None:
                raise self._failed
            if not ok:
                raise AuditError(f"audit record {seq} not durable after {timeout} s")

    def stats(self) -> AuditStats:
        return AuditStats(
            records_written=self._records_written,
            bytes_written=self._bytes_written,
            commits=self._commits,
            last_commit_latency_s=self._last_latency,
            max_commit_latency_s=self._max_latency,
            pending=len(self._pending),
            last_seq=self._next_seq - 1,
            durable_seq=self._durable_seq,
            segments_created=self._segments_created,
            checkpoints=self._checkpoints,
            last_checkpoint_seq=self._ckpt_covered,
            checkpoint_export_errors=self._export_errors,
            segments_deleted=self._segments_deleted,
            retention_blocked=self._retention_blocked,
            retention_errors=self._retention_errors,
        )

    # ------------------------------------------------------------- writer thread
    def _run(self) -> None:
        next_commit = time.monotonic() + self.commit_interval_s
        while True:
            self._wake.wait(max(0.0, next_commit - time.monotonic()))
            self._wake.clear()
            next_commit = time.monotonic() + self.commit_interval_s
            with self._lock:
                batch, self._pending = self._pending, []
                closing = self._closing
                if self._checkpoint_due(self._next_seq - 1, closing):
                    seq = self._next_seq
                    self._next_seq = seq + 1
                    batch.append((seq, CHECKPOINT_KIND, time.time(), time.monotonic(), _CHECKPOINT, b""))
                    self._ckpt_covered, self._ckpt_record, self._ckpt_time = seq - 1, seq, time.monotonic()
            if batch:
                try:
                    self._commit(batch)
                except Exception as exc:  # any failure to persist is fatal, whatever its type
                    where = self._seg_path or self.directory
                    self._fail(AuditError(f"audit log write failed at {where}: {exc}"))
                    return
            if closing and not self._pending:
                return

    def _checkpoint_due(self, last: int, closing: bool) -> bool:
        if self.signer is None or self._failed is not None or last <= self._ckpt_record:
            return False  # no signer, or nothing new since the last checkpoint record
        return (closing or last - self._ckpt_covered >= self.checkpoint_every_records
                or time.monotonic() - self._ckpt_time >= self.checkpoint_every_s)

    def _commit(self, batch: list[_Item]) -> None:
        """Encode, chain, write and fsync one group. Latency counts the I/O only."""
        io_s = 0.0
        bytes_before = self._bytes_written
        signed: list[Checkpoint] = []
        for start in range(0, len(batch), _SLICE):  # bounded memory for a large backlog
            pieces = self._encode(batch[start : start + _SLICE], signed)
            t0 = time.perf_counter()
            for rotate_to, data in pieces:
                if rotate_to is not None:
                    self._rotate(*rotate_to)
                self._write(data)
            io_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        os.fsync(self._fd)
        io_s += time.perf_counter() - t0
        last = batch[-1][0]
        self._records_written += len(batch)
        self._commits += 1
        self._last_latency = io_s
        self._max_latency = max(self._max_latency, io_s)
        with self._cond:
            self._durable_seq = last
            ready = [w for w in self._async_waiters if w[0] <= last]
            self._async_waiters = [w for w in self._async_waiters if w[0] > last]
            self._cond.notify_all()
        for seq, loop, fut in ready:
            _resolve(loop, fut, seq, None)
        if signed:
            self._checkpoints += len(signed)
            self._export(signed)
        if self._on_commit is not None:
            self._on_commit(io_s, len(batch), self._bytes_written - bytes_before)

    def _export(self, signed: list[Checkpoint]) -> None:
        """Send checkpoints off the log: export file (appended, fsynced) and callback."""
        if self.checkpoint_export is not None:
            try:
                fd = os.open(self.checkpoint_export, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    _drop_torn_line(fd)
                    _write_all(fd, "".join(c.line() for c in signed).encode("ascii"))
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError:
                self._export_errors += len(signed)
        if self._on_checkpoint is not None:
            for c in signed:
                try:
                    self._on_checkpoint(c)
                except Exception:  # noqa: BLE001 - an outside anchor failing must not stop the log
                    self._export_errors += 1

    def _encode(self, items: list[_Item], signed: list[Checkpoint]) -> list[tuple[tuple[int, bytes] | None, bytes]]:
        """Frames for ``items`` as ``[(rotate_to, bytes), ...]``; advances the chain head.

        ``rotate_to`` is ``(first_seq, prev_hash)`` of a segment to start before writing.
        Every few records the thread yields the GIL: without it a waiting event loop could
        stall for a whole switch interval behind the encoder.
        """
        pieces: list[tuple[tuple[int, bytes] | None, bytes]] = []
        rotate_to: tuple[int, bytes] | None = None
        parts: list[bytes] = []
        seg_size = self._seg_size
        head = self._head
        frame_of, limit = fmt.encode_frame, self.segment_max_bytes
        too_old = (self.segment_max_age_s is not None
                   and time.monotonic() - self._seg_started >= self.segment_max_age_s)
        for n, (seq, kind, t_wall, t_mono, how, blob) in enumerate(items, 1):
            if how == _CHECKPOINT:
                assert self.signer is not None
                cp = self.signer.sign(seq - 1, head, int(t_wall * 1e9))
                signed.append(cp)
                payload = fmt.encode_payload({**cp.payload(), "kind": kind, "t_wall": t_wall, "t_mono": t_mono})
            elif how == _OWNED:
                payload = _encode_owned(seq, kind, t_wall, t_mono, blob)
            else:
                payload = blob
            frame, digest = frame_of(seq, head, payload)
            if (seg_size + len(frame) > limit or too_old) and seg_size > fmt.HEADER_SIZE:
                pieces.append((rotate_to, b"".join(parts)))
                rotate_to, parts, seg_size, too_old = (seq, head), [], fmt.HEADER_SIZE, False
            parts.append(frame)
            seg_size += len(frame)
            head = digest
            if n % _YIELD_EVERY == 0:
                os.sched_yield()  # releases the GIL, and costs far less than time.sleep(0)
        pieces.append((rotate_to, b"".join(parts)))
        self._head = head
        return pieces

    def _write(self, data: bytes) -> None:
        if data:
            _write_all(self._fd, data)
            self._seg_size += len(data)
            self._bytes_written += len(data)

    def _rotate(self, first_seq: int, prev_hash: bytes) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        self._new_segment(first_seq, prev_hash)
        if self.retention_max_segments or self.retention_max_bytes or self.retention_max_age_s:
            try:
                self._apply_retention()
            except OSError:
                self._retention_errors += 1  # old segments stay: nothing lost, the log goes on

    def exported_through(self) -> int:
        """``through_seq`` of the export marker (0 when there is none or it is unreadable)."""
        return read_exported_marker(self.directory)

    def _apply_retention(self) -> None:
        """Delete the oldest whole segments over a limit, never past the export marker."""
        segs = fmt.list_segments(self.directory)
        if len(segs) < 2:
            return
        sizes = [p.stat().st_size for _, p in segs]
        now = time.time()
        through = self.exported_through()
        doomed: list[tuple[int, Path]] = []
        blocked = 0
        total, count = sum(sizes), len(segs)
        for i in range(len(segs) - 1):  # never the segment being written
            over = ((self.retention_max_segments is not None and count > self.retention_max_segments)
                    or (self.retention_max_bytes is not None and total > self.retention_max_bytes)
                    or (self.retention_max_age_s is not None
                        and now - segs[i][1].stat().st_mtime > self.retention_max_age_s))
            if not over:
                break
            last_seq = segs[i + 1][0] - 1
            if last_seq > through:
                blocked = len(segs) - 1 - i  # this and every later closed segment
                break
            doomed.append(segs[i])
            total, count = total - sizes[i], count - 1
        self._retention_blocked = blocked
        if not doomed:
            return
        deleted: list[tuple[int, Path]] = []
        for item in doomed:  # oldest first: a failure leaves a log that still starts cleanly
            try:
                item[1].unlink()
            except OSError:
                self._retention_errors += 1
                break
            deleted.append(item)
        if not deleted:
            return
        doomed = deleted
        keep_seq, keep_path = segs[len(doomed)]
        with open(keep_path, "rb") as f:
            header = f.read(fmt.HEADER_SIZE)
        prev_hash = fmt.HEADER.unpack_from(header, 0)[3]
        _fsync_dir(self.directory)
        self._segments_deleted += len(doomed)
        payload = {"deleted": [p.name for _, p in doomed], "first_seq_kept": keep_seq,
                   "prev_hash": prev_hash.hex(), "exported_through": through}
        with self._lock:  # an internal record: allowed while closing, committed next round
            seq = self._next_seq
            self._next_seq = seq + 1
            t_wall, t_mono = time.time(), time.monotonic()
            blob = fmt.encode_payload({"t_wall": t_wall, "t_mono": t_mono, **payload, "kind": "retention"})
            self._pending.append((seq, "retention", t_wall, t_mono, _ENCODED, blob))
        self._wake.set()

    def _new_segment(self, first_seq: int, prev_hash: bytes) -> None:
        """Create a segment atomically: header to a temp file, fsync, rename, fsync the dir."""
        path = self.directory / fmt.segment_name(first_seq)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, fmt.pack_header(first_seq, prev_hash))
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        os.rename(tmp, path)
        _fsync_dir(self.directory)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._seg_path, self._seg_size = path, fmt.HEADER_SIZE
        self._seg_started = time.monotonic()
        self._segments_created += 1

    def _fail(self, err: AuditError) -> None:
        with self._cond:
            if self._failed is None:
                self._failed = err
            err = self._failed
            waiters, self._async_waiters = self._async_waiters, []
            report = not self._fatal_reported
            self._fatal_reported = True
            self._cond.notify_all()
        for seq, loop, fut in waiters:
            _resolve(loop, fut, seq, err)
        if report and self._on_fatal is not None:
            try:
                self._on_fatal(err)
            except Exception:  # noqa: BLE001 - a failing handler must not stop the fail-safe path
                pass


def _kind_of(rec: fmt.Record) -> object:
    try:
        return rec.decode().get("kind")
    except ValueError:
        return None


def read_exported_marker(directory: Path) -> int:
    """``through_seq`` of ``directory/exported.json``; 0 when absent or unreadable."""
    try:
        value = json.loads((Path(directory) / EXPORTED_NAME).read_text(encoding="utf-8"))
        through = value["through_seq"]
        return through if isinstance(through, int) and through >= 0 else 0
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _resolve(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[int], seq: int, err: Exception | None) -> None:
    def settle() -> None:
        if not fut.done():
            if err is None:
                fut.set_result(seq)
            else:
                fut.set_exception(err)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:
        pass  # the loop is closed: nobody is waiting any more
