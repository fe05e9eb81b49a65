"""``edgewarden audit``: keys, verification, reading and export of the audit log."""

from __future__ import annotations

import argparse
import os
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgewarden.gateway.audit import highwater
from edgewarden.gateway.errors import AuditError


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    audit = subparsers.add_parser("audit", help="verify, read and export the audit log; make signing keys")
    sub = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)

    p = sub.add_parser("verify", help="check framing, checksums, sequence, hash chain and checkpoints")
    p.add_argument("path", type=Path, help="audit log directory")
    p.add_argument("--pubkey", type=Path, metavar="KEY",
                   help="Ed25519 public key (PEM): check every checkpoint signature; the log must have one")
    p.add_argument("--checkpoints", type=Path, metavar="FILE",
                   help="checkpoints exported off the box (JSON lines): each must match the log, "
                        "so a log cut short past the last one fails")
    p.set_defaults(handler=_verify)

    p = sub.add_parser("repair", help="cut damage at the end of a log that is not a crash tail (the gateway "
                                       "refuses to start on it); never cuts an exported record")
    p.add_argument("path", type=Path, help="audit log directory (stop the gateway first)")
    p.add_argument("--checkpoints", type=Path, metavar="FILE",
                   help="the gateway's checkpoint_export file: records its checkpoints cover are not cut")
    p.set_defaults(handler=_repair)

    p = sub.add_parser("new-chain", help="let the gateway continue a log that is behind its high-water mark "
                                          "(cut, rolled back or replaced), on purpose: recorded first in it")
    p.add_argument("path", type=Path, help="audit log directory (stop the gateway first)")
    p.add_argument("--reason", required=True, help="why (recorded)")
    p.add_argument("--operator", required=True, help="who decided (recorded)")
    p.set_defaults(handler=_new_chain)

    p = sub.add_parser("keygen", help="write a new Ed25519 key pair for signing checkpoints")
    p.add_argument("private", type=Path, help="private key file to write (mode 0600)")
    p.add_argument("--public", type=Path, help="public key file (default: PRIVATE.pub)")
    p.add_argument("--force", action="store_true", help="overwrite existing key files")
    p.set_defaults(handler=_keygen)

    p = sub.add_parser("tail", help="print the last records as JSON lines")
    p.add_argument("path", type=Path, help="audit log directory")
    p.add_argument("-n", type=int, default=10, metavar="N", help="number of records (default 10)")
    p.set_defaults(handler=_tail)

    p = sub.add_parser("show", help="print records as JSON lines, filtered by time and kind; "
                                     "says on stderr how many show a write the device did not acknowledge")
    _filters(p)
    p.add_argument("--failed-writes", action="store_true",
                   help="only records with a write that was not acknowledged (failed, timeout, not attempted)")
    p.set_defaults(handler=_show)

    p = sub.add_parser("checkpoints", help="print the log's signed checkpoints as export lines")
    p.add_argument("path", type=Path, help="audit log directory")
    p.add_argument("-o", "--output", type=Path, help="append to FILE instead of printing")
    p.set_defaults(handler=_checkpoints)

    p = sub.add_parser("export", help="export records as JSON lines (a training dataset: train from-audit)")
    _filters(p)
    p.add_argument("-o", "--output", type=Path,
                   help="output file (default stdout). An unfiltered export to a file marks its records "
                        "exported (exported.json), which retention needs")
    p.set_defaults(handler=_export)


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", type=Path, help="audit log directory")
    p.add_argument("--since", help="from this time (Unix seconds or ISO-8601, UTC if no zone)")
    p.add_argument("--until", help="before this time")
    p.add_argument("--kind", action="append", metavar="KIND", help="only this kind (repeatable)")


def _dir(path: Path) -> Path:
    if not path.is_dir():
        raise AuditError(f"{path}: not a directory")
    return path


def _verify(args: argparse.Namespace) -> int:
    from edgewarden.gateway.audit.checkpoint import CheckpointFileError, load_public_key, read_exported
    from edgewarden.gateway.audit.verify import verify

    pub = load_public_key(args.pubkey) if args.pubkey else None
    try:
        exported = read_exported(args.checkpoints) if args.checkpoints else None
    except CheckpointFileError as exc:
        print(f"FAILED: {exc}")
        return 1
    result = verify(args.path, pubkey=pub, checkpoints=exported)
    span = f"seq {result.first_seq}..{result.last_seq}" if result.records else "no records"
    if result.ok:
        print(f"OK: {result.records} records ({span}) in {result.segments} segment(s), head {result.head}")
        signed = ("signatures checked" if pub is not None else "signatures NOT checked (no --pubkey)")
        print(f"  {result.checkpoints} checkpoint(s), {signed}"
              + (f", signed through seq {result.signed_through}" if result.signed_through is not None else ""))
        if exported is not None:
            print(f"  {len(exported)} exported checkpoint(s) read, {result.exported_checked} matched in the log")
        return 0
    print(f"FAILED: {result.error}")
    print(f"  intact before it: {result.records} records ({span}), head {result.head}")
    return 1


def _repair(args: argparse.Namespace) -> int:
    from edgewarden.gateway.audit.writer import AuditWriter

    writer = AuditWriter(_dir(args.path), checkpoint_export=args.checkpoints,
                         high_water=highwater.path_for(args.path))
    writer.open(repair_damaged_tail=True)
    writer.close()
    cut = writer.repaired
    if cut is None:
        print(f"{args.path}: nothing to repair")
        return 0
    what = (f"cut {cut['cut_bytes']} bytes at {cut['file']} offset {cut['offset']} ({cut['damage']})"
            if "cut_bytes" in cut else cut["reason"])
    print(f"{args.path}: {what}; recorded in a repair record (sha256 of the cut bytes {cut.get('cut_sha256', '-')})")
    return 0


def _new_chain(args: argparse.Namespace) -> int:
    from edgewarden.gateway.audit.writer import AuditWriter

    mark = highwater.path_for(args.path)
    writer = AuditWriter(_dir(args.path), high_water=mark)
    writer.open(new_chain={"reason": args.reason, "operator": args.operator})
    seq = writer.last_seq
    writer.close()
    print(f"{args.path}: continues at seq {seq + 1}; the chain_restart record (seq {seq}) names the mark it "
          f"overrides ({mark})")
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from edgewarden.gateway.audit.checkpoint import generate_keypair

    public = args.public or args.private.with_name(args.private.name + ".pub")
    kid = generate_keypair(args.private, public, overwrite=args.force)
    print(f"wrote {args.private} (private, mode 600) and {public} (public); key id {kid}")
    print("set [audit] signing_key to the private key; give verifiers the public key")
    return 0


def _tail(args: argparse.Namespace) -> int:
    from edgewarden.gateway.audit.jsonl import record_line
    from edgewarden.gateway.audit.verify import iter_records

    if args.n < 0:
        raise AuditError("-n must be >= 0")
    for rec in deque(iter_records(_dir(args.path)), maxlen=args.n):
        sys.stdout.write(record_line(rec))
    sys.stdout.flush()  # a reader that left (| head): edgewarden/gateway/cli.py ends quietly
    return 0


def _selected(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from edgewarden.gateway.audit.jsonl import parse_time, select
    from edgewarden.gateway.audit.verify import iter_records

    since = parse_time(args.since) if args.since else None
    until = parse_time(args.until) if args.until else None
    return select(iter_records(_dir(args.path)), since=since, until=until, kinds=args.kind), since, until


def _show(args: argparse.Namespace) -> int:
    from edgewarden.gateway.audit.jsonl import unacknowledged, write_jsonl

    records, _, _ = _selected(args)
    failed: list[int] = []

    def marked() -> Iterator[Any]:
        for rec in records:
            if unacknowledged(rec.payload):
                failed.append(rec.seq)
            elif args.failed_writes:
                continue
            yield rec

    write_jsonl(marked(), sys.stdout)
    sys.stdout.flush()
    if failed:
        print(f"audit show: {len(failed)} record(s) with a write the device did not acknowledge "
              f"(seq {failed[0]}..{failed[-1]}); --failed-writes lists only those", file=sys.stderr)
    return 0


def _checkpoints(args: argparse.Namespace) -> int:
    from edgewarden.gateway.audit.checkpoint import KIND, Checkpoint
    from edgewarden.gateway.audit.verify import iter_records

    lines = []
    for rec in iter_records(_dir(args.path)):
        if rec.payload.get("kind") == KIND:
            try:
                lines.append(Checkpoint.from_dict(rec.payload).line())
            except ValueError as exc:
                raise AuditError(f"checkpoint record {rec.seq} is malformed: {exc}") from None
    if args.output is None:
        sys.stdout.write("".join(lines))
        return 0
    try:
        with open(args.output, "a", encoding="ascii") as f:
            f.write("".join(lines))
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise AuditError(f"cannot write {args.output}: {exc}") from None
    print(f"appended {len(lines)} checkpoint(s) to {args.output}", file=sys.stderr)
    return 0


def _export(args: argparse.Namespace) -> int:
    from edgewarden.gateway.audit.jsonl import continuation, mark_exported, write_jsonl

    if args.output is not None and args.output.exists() and _filtered(args):
        raise AuditError(f"{args.output} exists: an export never overwrites a file (it may hold the only copy "
                         "of records retention has deleted); choose a new file")
    records, _, _ = _selected(args)
    if args.output is None:
        write_jsonl(records, sys.stdout)
        sys.stdout.flush()
        return 0
    after = None if _filtered(args) else continuation(args.output, _dir(args.path))
    if after is not None:
        records = (r for r in records if r.seq > after.seq)
    try:
        with open(args.output, "a" if args.output.exists() else "x", encoding="utf-8") as f:
            n, last = write_jsonl(records, f)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise AuditError(f"cannot write {args.output}: {exc}") from None
    verb = f"appended {n} records to {args.output} (after seq {after.seq})" if after is not None \
        else f"exported {n} records to {args.output}"
    last = last or after
    if last is not None and not _filtered(args):
        through = mark_exported(args.path, last, args.output)
        verb += f"; marked exported through seq {through}"
    print(verb, file=sys.stderr)
    return 0


def _filtered(args: argparse.Namespace) -> bool:
    return bool(args.since or args.until or args.kind)
