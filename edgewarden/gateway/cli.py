"""The ``edgewarden`` command: one entry point, one sub-command group per area.

Each group lives beside its code and exposes ``register(subparsers)``; handlers import
their heavy dependencies (torch, h5py) lazily so the edge install stays torch-free. The
gateway's own modules never import edgewarden.training, .simulators or .hil (tests/unit/
test_edge_boundary.py); this table names their command groups, offered where installed.
A handler returns an exit code. Every ``GatewayError`` becomes a one-paragraph message
on stderr and its exit code; nothing else a user can cause prints a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Sequence

from edgewarden.gateway.errors import GatewayError
from edgewarden.gateway.version import version

# Modules that add a sub-command group: each has register(subparsers).
_GROUPS: tuple[str, ...] = (
    "edgewarden.gateway.ops.cli",
    "edgewarden.gateway.audit.cli",
    "edgewarden.gateway.policy.cli",
    "edgewarden.gateway.discover.cli",
    "edgewarden.gateway.certs.cli",
    "edgewarden.gateway.tuning.cli",
    "edgewarden.simulators.cli",
    "edgewarden.training.cli",
    "edgewarden.hil.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgewarden",
        description="Industrial edge control gateway: runs a verified ONNX policy next to "
        "your PLCs, shields every action, latches e-stop, audits every decision.",
    )
    parser.add_argument("--version", action="version", version=f"edgewarden {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _GROUPS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # an install without that package (the edge install may leave out the twins,
            # training and the bench): its commands are simply not offered
            if name.startswith("edgewarden.gateway.") or exc.name != name.rsplit(".", 1)[0]:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except GatewayError as exc:
        print(f"edgewarden: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edgewarden: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader left (``| head``, a closed pager): nothing more to say, and nothing
        # for the interpreter to fail on when it flushes stdout at exit
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        return 0  # the reader had what it wanted


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
