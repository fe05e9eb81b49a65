"""``edgewarden model ...`` and ``edgewarden excite ...``: inspect and check model files;
over the running gateway's control socket, drive its model lifecycle (load, shadow,
promote, rollback), a learned policy's authority band, and the operator's test signal on
the running controller's output."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import hashlib
import json
from pathlib import Path
from typing import Any

from edgewarden.gateway.errors import ConfigError
from edgewarden.gateway.readfile import read_regular

MODEL_MAX_BYTES = 1 << 30  # what `model inspect|check` reads of a file (the daemon's bound: [policy] max_model_mb)


def register(sub: argparse._SubParsersAction) -> None:
    model = sub.add_parser("model", help="inspect, check and swap ONNX policies")
    msub = model.add_subparsers(dest="model_command", metavar="COMMAND", required=True)

    inspect = msub.add_parser("inspect", help="contract, hash and training statistics of a model file")
    inspect.add_argument("file", type=Path)
    inspect.set_defaults(handler=_inspect)

    check = msub.add_parser("check", help="verify a model against a gateway config, as a load would")
    check.add_argument("file", type=Path)
    check.add_argument("--config", "-c", type=Path, required=True)
    check.set_defaults(handler=_check)

    for name, text in (("load", "validate a model and make it the active one, between two cycles"),
                       ("shadow", "run a model beside the active one: audited, never written")):
        p = msub.add_parser(name, help=text)
        p.add_argument("file", type=Path)
        p.add_argument("--sha256", default=None, help="refuse any other file")
        _remote_args(p)
        p.set_defaults(handler=_remote, action=name)
    promote = msub.add_parser("promote", help="make the shadow model active, if its evidence holds (agreement, "
                              "transients seen, no copying of its own output)")
    promote.add_argument("--force", action="store_true", help="promote although the evidence does not hold "
                         "(needs --reason; recorded with the evidence)")
    _remote_args(promote)
    promote.set_defaults(handler=_remote, action="promote", file=None, sha256=None)
    for name, text in (("rollback", "go back to the previous model"),
                       ("status", "active, previous, staged and shadow models")):
        p = msub.add_parser(name, help=text)
        _remote_args(p)
        p.set_defaults(handler=_remote, action=name, file=None, sha256=None)
    auth = msub.add_parser("authority", help="set the band a learned policy acts within around the incumbent's "
                           "proposal (docs/safety.md, bounded authority)")
    which = auth.add_mutually_exclusive_group(required=True)
    which.add_argument("--band", nargs="+", metavar="ACTION=VALUE", help="± engineering units per action")
    which.add_argument("--full", action="store_true", help="full authority: the action bounds alone")
    which.add_argument("--start", action="store_true", help="back to the configured starting band")
    _remote_args(auth)
    auth.set_defaults(handler=_remote, action="authority", file=None, sha256=None)

    excite = sub.add_parser("excite", help="a bounded test signal on the running controller's output, so the "
                            "history holds varied actions (docs/commissioning.md)")
    esub = excite.add_subparsers(dest="excite_command", required=True)
    start = esub.add_parser("start", help="start a PRBS or step sequence around the controller's output (AUTO)")
    start.add_argument("--amplitude", nargs="+", required=True, metavar="ACTION=VALUE",
                       help="± engineering units per action (at most [policy.excitation] max_fraction of its span)")
    start.add_argument("--signal", choices=["prbs", "steps"], default="prbs",
                       help="prbs: +A or -A at random each hold; steps: +A, 0, -A, 0 (step tests, for tune)")
    start.add_argument("--hold", type=float, default=5.0, metavar="S", help="seconds a level is held (default 5)")
    start.add_argument("--duration", type=float, default=600.0, metavar="S", help="seconds in all (default 600)")
    start.add_argument("--seed", type=int, default=None, help="the PRBS sequence's seed (default: random, recorded)")
    _remote_args(start)
    start.set_defaults(handler=_excite, action="start")
    for name, text in (("stop", "stop it now"), ("status", "what runs, and for how long still")):
        p = esub.add_parser(name, help=text)
        _remote_args(p)
        p.set_defaults(handler=_excite, action=name)


def _remote_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", type=Path, help="gateway config (to find the control socket)")
    p.add_argument("--socket", type=Path, help="control socket path")
    p.add_argument("--operator", "--actor", dest="actor", default=None,
                   help="operator name for the audit log (default: login name)")
    p.add_argument("--reason", default="", help="recorded with the command")


def _inspect(args: argparse.Namespace) -> int:
    import onnxruntime as ort

    from edgewarden.gateway.errors import PolicyError
    from edgewarden.gateway.policy.contract import METADATA_KEY, PolicyContract

    data = read_regular(args.file, what="model", max_bytes=MODEL_MAX_BYTES, error=PolicyError)
    try:
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several types for a bad file
        raise PolicyError(f"{args.file} is not a loadable ONNX model: {str(exc).splitlines()[0]}") from None
    meta = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in meta:
        raise PolicyError(f"{args.file} carries no {METADATA_KEY} metadata: not an edgewarden policy")
    contract = PolicyContract.from_json(meta[METADATA_KEY])
    out: dict[str, Any] = {"file": str(args.file), "sha256": hashlib.sha256(data).hexdigest(),
                           "bytes": len(data), **contract.to_dict()}
    print(json.dumps(out, indent=2))
    return 0


def _check(args: argparse.Namespace) -> int:
    from edgewarden.gateway.config import load_config
    from edgewarden.gateway.policy.registry import load_verified

    s = load_config(args.config).settings
    policy = load_verified(s, args.file, s.policy.sha256)
    print(f"{args.file}: OK for {args.config} — sha256 {policy.sha256}, algorithm "
          f"{policy.contract.algorithm}, {len(s.policy.observations)} observations → "
          f"{len(s.policy.actions)} actions")
    return 0


def _band_pairs(pairs: list[str], option: str) -> dict[str, float]:
    band: dict[str, float] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            band[name.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"{option} {pair!r}: expected ACTION=VALUE with VALUE a number") from None
        if not sep or not name.strip():
            raise ConfigError(f"{option} {pair!r}: expected ACTION=VALUE")
    return band


def _socket(args: argparse.Namespace, command: str) -> Path:
    from edgewarden.gateway.config import load_config

    if args.socket is not None:
        return Path(args.socket)
    if args.config is not None:
        return load_config(args.config).settings.control.socket
    raise ConfigError(f"{command} {args.action} needs --config FILE or --socket PATH to find the gateway")


def _send(sock: Path, request: dict[str, Any]) -> int:
    from edgewarden.gateway.ops.control import send_command

    reply = asyncio.run(send_command(sock, request, timeout_s=30.0))
    print(json.dumps(reply, indent=2))
    return 0 if reply.get("ok") else 1


def _excite(args: argparse.Namespace) -> int:
    request: dict[str, Any] = {"cmd": "excite", "action": args.action, "actor": args.actor or getpass.getuser(),
                               "reason": args.reason}
    if args.action == "start":
        request.update(signal=args.signal, amplitude=_band_pairs(args.amplitude, "--amplitude"), hold_s=args.hold,
                       duration_s=args.duration, **({} if args.seed is None else {"seed": args.seed}))
    return _send(_socket(args, "excite"), request)


def _remote(args: argparse.Namespace) -> int:
    sock = _socket(args, "model")
    request: dict[str, Any] = {"cmd": "model", "action": args.action, "actor": args.actor or getpass.getuser(),
                               "reason": args.reason}
    if args.file is not None:
        request["path"] = str(args.file.resolve())
        request["sha256"] = args.sha256
    if getattr(args, "force", False):
        request["force"] = True
    if args.action == "authority":
        request["band"] = "full" if args.full else "start" if args.start else _band_pairs(args.band, "--band")
    return _send(sock, request)
