"""``edgewarden train ...``: offline training. Needs the ``train`` extra (torch, h5py, onnx).

Nothing here is imported by the gateway; heavy modules load inside the handlers, and a
missing extra becomes one clear sentence instead of an ImportError.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from gateway.errors import GatewayError

_TRAIN_EXTRA = "pip install -c constraints.txt -e '.[train]'"


def require_train_extra(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise GatewayError(f"this command needs the 'train' extra ({', '.join(missing)} not installed): "
                           f"run {_TRAIN_EXTRA}")


def register(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="offline training and export (needs the 'train' extra)")
    tsub = train.add_subparsers(dest="train_command", metavar="COMMAND", required=True)
    base = tsub.add_parser("baseline", help="tune the proportional baseline on the plant model, export ONNX")
    base.add_argument("plant", choices=["cstr"])
    base.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    base.set_defaults(handler=_baseline)


def _baseline(args: argparse.Namespace) -> int:
    require_train_extra("onnx")
    from training.baseline import describe, make_baseline

    tuning = make_baseline(args.out)
    print(f"wrote {args.out}: {describe(tuning)}")
    return 0
