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

Rotation happens by size (``segment_max_bytes``) and by age (``segment_max_age_s``);
after a rotation, retention (edgewarden/gateway/audit/retention.py) may delete old, exported
segments and records it in a ``retention`` record. Opening a log recovers it first
(edgewarden/gateway/audit/recovery.py).

Failure is one-way: the first write, fsync or rotation error makes :attr:`failed` the
``AuditError``, calls ``on_fatal`` once (from the writer thread: the gateway must hand
it to its loop with ``call_soon_threadsafe``) and every later append raises. A failed
fsync is never retried: after it the kernel may have dropped the dirty pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgewarden.gateway.audit import highwater, retention
from edgewarden.gateway.audit import record as fmt
from edgewarden.gateway.audit.checkpoint import KIND as CHECKPOINT_KIND
from edgewarden.gateway.audit.checkpoint import Checkpoint, Signer, append_exported
from edgewarden.gateway.audit.files import LOCK_NAME, create_segment, write_all
from edgewarden.gateway.audit.recovery import Recovered, recover
from edgewarden.gateway.errors import AuditError

_ENCODED = 1  # item payload is canonical JSON, encoded on the caller's side
_CHECKPOINT = 2  # a checkpoint to sign when its predecessor's hash is known
_OWNED = 3  # item payload is the caller's dict, handed over, encoded on the writer thread
_SLICE = 4096  # records encoded before they are written, within one commit
_YIELD_EVERY = 16  # records framed between GIL yields

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
        high_water: Path | None = None,
    ) -> None:
        if commit_interval_s <= 0:
            raise ValueError("commit_interval_s must be > 0")
        if segment_max_bytes < fmt.HEADER_SIZE + 1024:
            raise ValueError(f"segment_max_bytes must be at least {fmt.HEADER_SIZE + 1024}")
        if checkpoint_every_records < 1 or checkpoint_every_s <= 0:
            raise ValueError("checkpoint_every_records must be >= 1 and checkpoint_every_s > 0")
        self.directory = Path(directory)
        self.signer = signer
        self.checkpoint_every_records = checkpoint_every_records
        self.checkpoint_every_s = checkpoint_every_s
        self.checkpoint_export = Path(checkpoint_export) if checkpoint_export is not None else None
        self._on_checkpoint = on_checkpoint
        self.segment_max_age_s = segment_max_age_s
        self.retention = retention.Limits(retention_max_segments, retention_max_bytes, retention_max_age_s)
        self.commit_interval_s = commit_interval_s
        self.segment_max_bytes = segment_max_bytes
        self.max_pending = max_pending
        self._on_fatal = on_fatal
        self.high_water = Path(high_water) if high_water is not None else None  # audit/highwater.py
        self._mark_written = -math.inf  # time.monotonic() of the last high-water write
        self._mark_lock = threading.Lock()
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
        self._durable_head = fmt.GENESIS_HASH
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
    def open(self, *, repair_damaged_tail: bool = False, new_chain: dict[str, Any] | None = None) -> AuditWriter:
        """Recover the log (repair a torn tail, refuse corruption) and start the writer.

        Raises ``AuditError`` naming file and offset when the log is damaged anywhere but
        in a crash tail, when the damaged tail holds a record that was exported (by
        ``audit export`` or as an exported checkpoint), or when another writer holds the
        directory. ``repair_damaged_tail`` (``edgewarden audit repair``, an operator's
        decision) also cuts damage at the end of the log that is not a crash tail, such
        as a complete last record failing its crc, unless it was exported.

        With ``high_water``, a log that is behind what this writer made durable before is
        refused (AuditError naming ``edgewarden audit new-chain``); ``new_chain`` (that
        command's reason and operator) accepts it and records a ``chain_restart`` first.
        The segment being written is checked after every commit: removed or replaced, it
        is a failure like a failed fsync.
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
            mark, unreadable = self._read_mark(new_chain is not None)
            log = recover(self.directory, repair_damaged_tail=repair_damaged_tail,
                          checkpoint_export=self.checkpoint_export, hash_at=mark.seq if mark else None)
            last = log.next_seq - 1
            head_at = log.hash_at.hex() if log.hash_at is not None else None
            if new_chain is None:
                why = highwater.behind(mark, last, head_at)
                if why is not None and repair_damaged_tail and log.repair is not None and last < mark.seq:  # type: ignore[union-attr]
                    # the operator's repair cut records the gateway had made durable: on record in the repair
                    log.repair["marked_seq"], log.repair["marked_head"] = mark.seq, mark.head  # type: ignore[union-attr,index]
                else:
                    highwater.check(self.directory, mark, last, head_at)
            repair = self._take_over(log)
        except BaseException:
            self._close_fds()
            raise
        self._open, self._closing = True, False
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()
        self.repaired = repair
        if repair is not None:
            self.append_durable("repair", repair)
        try:
            if new_chain is not None:
                self.append_durable("chain_restart", {**new_chain, "log_seq": log.next_seq - 1,
                                                      "marked_seq": mark.seq if mark else None,
                                                      "marked_head": mark.head if mark else None,
                                                      **({"mark_unreadable": unreadable} if unreadable else {})})
            self._mark(sync=True)
        except BaseException:
            with contextlib.suppress(AuditError):
                self.close()
            raise
        return self

    def _read_mark(self, new_chain: bool) -> tuple[highwater.Mark | None, str]:
        """The high-water mark (None: none kept); for a new chain an unreadable one is no
        obstacle, only a fact for its record."""
        if self.high_water is None:
            return None, ""
        try:
            return highwater.read(self.high_water), ""
        except AuditError as exc:
            if not new_chain:
                raise
            return None, str(exc)

    def _mark(self, *, sync: bool) -> None:
        """The high-water mark: the last durable record (writer thread, or open/close)."""
        if self.high_water is None:
            return
        try:
            with self._mark_lock:  # the writer thread's and open/close's, one at a time
                with self._cond:
                    seq, head = self._durable_seq, self._durable_head
                highwater.write(self.high_water, highwater.Mark(seq, head.hex()), sync=sync)
        except OSError as exc:
            raise AuditError(f"audit high-water mark {self.high_water} cannot be written: {exc.strerror}") from None
        self._mark_written = time.monotonic()

    def _take_over(self, log: Recovered) -> dict[str, Any] | None:
        self._next_seq = log.next_seq
        self._durable_seq = log.next_seq - 1
        self._head = self._durable_head = log.head
        if log.last_checkpoint_seq is not None:  # still anchored
            self._ckpt_covered, self._ckpt_record = log.last_checkpoint_seq - 1, log.last_checkpoint_seq
        try:
            if log.segment is None:
                self._new_segment(fmt.FIRST_SEQ, fmt.GENESIS_HASH)
            else:
                self._fd = os.open(log.segment, os.O_WRONLY | os.O_APPEND)
                self._seg_path, self._seg_size = log.segment, log.segment_size
        except OSError as exc:
            raise AuditError(f"cannot open audit log {self.directory}: {exc}") from None
        return log.repair

    def close(self) -> None:
        """Write and fsync everything pending, stop the writer thread, release the log."""
        with self._lock:
            if not self._open or self._closing:
                return
            self._closing = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        try:
            if self._failed is None:
                self._mark(sync=True)
        finally:
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
        self._check_in_place()
        last = batch[-1][0]
        self._records_written += len(batch)
        self._commits += 1
        self._last_latency = io_s
        self._max_latency = max(self._max_latency, io_s)
        with self._cond:
            self._durable_seq, self._durable_head = last, self._head
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
        if self.high_water is not None and time.monotonic() - self._mark_written >= 1.0:
            self._mark(sync=False)  # at most once a second; fsynced at open and close

    def _check_in_place(self) -> None:
        """The segment just fsynced is still the file at its path, in the log's directory:
        a segment (or the directory) removed or replaced under a running writer would take
        every record after it with it."""
        mine = os.fstat(self._fd)
        try:
            there = os.stat(self._seg_path) if self._seg_path is not None else None
        except FileNotFoundError:
            there = None
        if mine.st_nlink == 0 or there is None or (there.st_dev, there.st_ino) != (mine.st_dev, mine.st_ino):
            raise AuditError(f"segment {self._seg_path} was removed or replaced while the gateway wrote it")

    def _export(self, signed: list[Checkpoint]) -> None:
        """Send checkpoints off the log: export file (appended, fsynced) and callback."""
        if self.checkpoint_export is not None:
            try:
                append_exported(self.checkpoint_export, signed)
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
            write_all(self._fd, data)
            self._seg_size += len(data)
            self._bytes_written += len(data)

    def _rotate(self, first_seq: int, prev_hash: bytes) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        self._new_segment(first_seq, prev_hash)
        if self.retention.any:
            self._apply_retention()

    def _apply_retention(self) -> None:
        try:
            done = retention.apply(self.directory, self.retention)
        except OSError:
            self._retention_errors += 1  # old segments stay: nothing lost, the log goes on
            return
        self._retention_blocked = done.blocked
        self._retention_errors += done.errors
        if done.record is None:
            return
        self._segments_deleted += len(done.deleted)
        with self._lock:  # an internal record: allowed while closing, committed next round
            seq = self._next_seq
            self._next_seq = seq + 1
            t_wall, t_mono = time.time(), time.monotonic()
            blob = fmt.encode_payload({"t_wall": t_wall, "t_mono": t_mono, **done.record, "kind": "retention"})
            self._pending.append((seq, "retention", t_wall, t_mono, _ENCODED, blob))
        self._wake.set()

    def _new_segment(self, first_seq: int, prev_hash: bytes) -> None:
        path = create_segment(self.directory, first_seq, prev_hash)
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
        # the gateway hears of it first: a waiter woken by the error finds it already reported
        if report and self._on_fatal is not None:
            try:
                self._on_fatal(err)
            except Exception:  # noqa: BLE001 - a failing handler must not stop the fail-safe path
                pass
        for seq, loop, fut in waiters:
            _resolve(loop, fut, seq, err)


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
