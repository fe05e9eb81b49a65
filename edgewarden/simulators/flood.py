"""A hostile local client: opens connections to a Unix socket as fast as it can and
holds up to ``--hold`` of them open, never sending a byte. Used by the hostile-client
tests and by ``benchmarks/bench_safety.py --flood``.

    python -m edgewarden.simulators.flood SOCKET SECONDS [--uid UID] [--hold N]
"""

from __future__ import annotations

import argparse
import os
import socket
import time
from collections import deque


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("socket")
    ap.add_argument("seconds", type=float)
    ap.add_argument("--uid", type=int, default=None, help="become this uid (and gid) first (needs root)")
    ap.add_argument("--hold", type=int, default=200)
    args = ap.parse_args()
    if args.uid is not None:
        os.setgid(args.uid)
        os.setuid(args.uid)
    stop = time.monotonic() + args.seconds
    held: deque[socket.socket] = deque()
    while time.monotonic() < stop:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(args.socket)  # blocks while the listener's queue is full
        except OSError:
            s.close()
            continue
        held.append(s)
        if len(held) > args.hold:
            held.popleft().close()


if __name__ == "__main__":
    main()
