"""kill -9 a writer at random moments: nothing it acknowledged is ever lost.

The child appends cycle records and, every 200th, a durable trip record; after each
durable append returns it prints that seq (every earlier record is durable too). The
parent kills it with SIGKILL at a random moment, sometimes adds a torn half-record to
the tail (what a crash mid-write leaves), reopens the log and checks that every
acknowledged seq is there with its own payload, the tail was repaired, and the chain
verifies, round after round on the same directory. The child signs a checkpoint every
500 records and exports it to a file: every exported checkpoint must still match the
log after the crash (export happens only after the fsync that covers it), with the
signatures checked against the public key. The load is measured from the child's
acknowledgements (seq and time) and must be at least 10k records/s (median over rounds).
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgewarden.gateway.audit import AuditWriter, iter_records, verify
from edgewarden.gateway.audit import checkpoint as ck
from edgewarden.gateway.audit import record as fmt

REPO = Path(__file__).resolve().parents[3]

CHILD = r"""
import sys, pathlib, time
from edgewarden.gateway.audit import AuditWriter
from edgewarden.gateway.audit.checkpoint import Signer
w = AuditWriter(pathlib.Path(sys.argv[1]), commit_interval_s=0.002, signer=Signer.from_file(pathlib.Path(sys.argv[3])),
                checkpoint_every_records=500, checkpoint_export=pathlib.Path(sys.argv[4])).open()
out = open(sys.argv[2], "w")
out.write("ready\n"); out.flush()
r, i = int(sys.argv[5]), 0  # this round and the child's own count of what it appended
while True:
    for _ in range(199):
        i += 1
        w.append("cycle", {"r": r, "i": i, "pad": "x" * 200})
    i += 1
    # the seq the writer gave the record (it may have put a checkpoint before it)
    s = w.append_durable("trip", {"r": r, "i": i, "code": "TEST"})
    out.write(f"{s} {i} {time.monotonic()}\n"); out.flush()
"""


def _acks(path: Path) -> list[tuple[int, int, float]]:
    """(seq, the child's count i, time) of each acknowledged record."""
    lines = path.read_text().split("\n")[:-1]  # a last line without its newline was not acked
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) == 3:
            out.append((int(parts[0]), int(parts[1]), float(parts[2])))
    return out


def _crash_rounds(tmp_path: Path, rounds: int) -> None:
    rng = random.Random()
    seed = rng.randrange(2**32)
    rng.seed(seed)
    log = tmp_path / "audit"
    key, pub, exported = tmp_path / "k", tmp_path / "k.pub", tmp_path / "checkpoints.jsonl"
    ck.generate_keypair(key, pub)
    public = ck.load_public_key(pub)
    max_acked = 0
    last_acked_i: dict[int, int] = {}  # round -> the child's count at its last acknowledged record
    acked_records: dict[int, tuple[int, int]] = {}  # seq -> (round, i) of every acknowledged record
    rates: list[float] = []
    for rnd in range(rounds):
        acked_file = tmp_path / f"acked-{rnd}.txt"
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(log), str(acked_file), str(key),
                                  str(exported), str(rnd)], cwd=REPO)
        try:
            deadline = time.monotonic() + 20
            while not (acked_file.exists() and _acks(acked_file)):  # killed only once it acked
                assert child.poll() is None, f"child died at start (seed {seed}, round {rnd})"
                assert time.monotonic() < deadline, "child did not start"
                time.sleep(0.005)
            time.sleep(rng.uniform(0.01, 0.25))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        acks = _acks(acked_file)
        acked = max((seq for seq, _, _ in acks), default=0)
        assert acked > max_acked, f"round {rnd} acknowledged nothing (seed {seed})"
        if len(acks) >= 2 and acks[-1][2] > acks[0][2]:
            rates.append((acks[-1][0] - acks[0][0]) / (acks[-1][2] - acks[0][2]))
        max_acked = acked
        last_acked_i[rnd] = acks[-1][1]
        acked_records.update((seq, (rnd, i)) for seq, i, _ in acks)
        torn = rng.random() < 0.5
        if torn:  # a crash in the middle of a write leaves part of a frame behind
            frame, _ = fmt.encode_frame(10**9, bytes(32), b'{"half":"written"}' * 4)
            with fmt.list_segments(log)[-1][1].open("ab") as f:
                f.write(frame[: rng.randrange(1, len(frame))])
        with AuditWriter(log) as w:
            pass
        cps = ck.read_exported(exported)  # a line the kill cut short is not a checkpoint
        result = verify(log, pubkey=public if cps else None, checkpoints=cps)
        assert result.ok, f"{result.error} (seed {seed}, round {rnd})"
        assert result.exported_checked == len(cps)
        records = {r.seq: r.payload for r in iter_records(log)}
        for seq in range(1, max_acked + 1):
            assert seq in records, f"seq {seq} lost (seed {seed}, round {rnd})"
        for seq, (r, i) in acked_records.items():  # each acknowledged record is the one acked
            assert (records[seq]["r"], records[seq]["i"]) == (r, i), (seq, r, i, records[seq])
        # nothing appended before an acknowledged record is missing: per round, the child's
        # records are its counts 1, 2, 3 ... in seq order, through its last acknowledged one
        counts: dict[int, list[int]] = {}
        for seq in sorted(records):
            if records[seq]["kind"] in ("cycle", "trip"):
                counts.setdefault(records[seq]["r"], []).append(records[seq]["i"])
        for r, got in counts.items():
            assert got == list(range(1, len(got) + 1)), f"round {r}: a gap or reorder (seed {seed})"
            assert len(got) >= last_acked_i[r], f"round {r} lost acknowledged records (seed {seed})"
        if torn:
            last = records[max(records)]
            assert last["kind"] == "repair" and last["cut_bytes"] > 0, (seed, rnd, last)
        assert w.last_seq >= max_acked
    assert rates and statistics.median(rates) >= 10_000, f"load too low: {sorted(rates)} records/s"
    assert cps, "no checkpoint was exported in any round"


def test_kill9_never_loses_acknowledged_records(tmp_path: Path) -> None:
    _crash_rounds(tmp_path, 8)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("EDGEWARDEN_SLOW"), reason="slow: set EDGEWARDEN_SLOW=1")
def test_kill9_fifty_rounds(tmp_path: Path) -> None:
    _crash_rounds(tmp_path, 50)
