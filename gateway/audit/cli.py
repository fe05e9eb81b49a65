"""``edgewarden audit``: check and read an audit log from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections import deque
from pathlib import Path

from gateway.errors import AuditError


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    audit = subparsers.add_parser("audit", help="verify and read the audit log")
    sub = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)

    p = sub.add_parser("verify", help="check framing, checksums, sequence and hash chain")
    p.add_argument("path", type=Path, help="audit log directory")
    p.set_defaults(handler=_verify)

    p = sub.add_parser("tail", help="print the last records as JSON lines")
    p.add_argument("path", type=Path, help="audit log directory")
    p.add_argument("-n", type=int, default=10, metavar="N", help="number of records (default 10)")
    p.set_defaults(handler=_tail)


def _verify(args: argparse.Namespace) -> int:
    from gateway.audit.verify import verify

    result = verify(args.path)
    span = f"seq {result.first_seq}..{result.last_seq}" if result.records else "no records"
    if result.ok:
        print(f"OK: {result.records} records ({span}) in {result.segments} segment(s), head {result.head}")
        return 0
    print(f"FAILED: {result.error}")
    print(f"  intact before it: {result.records} records ({span}), head {result.head}")
    return 1


def _tail(args: argparse.Namespace) -> int:
    from gateway.audit.verify import iter_records

    if args.n < 0:
        raise AuditError("-n must be >= 0")
    if not args.path.is_dir():
        raise AuditError(f"{args.path}: not a directory")
    last = deque(iter_records(args.path), maxlen=args.n)
    out = sys.stdout
    for rec in last:
        out.write(json.dumps({"seq": rec.seq, "hash": rec.hash, "payload": rec.payload}, ensure_ascii=False) + "\n")
    return 0
