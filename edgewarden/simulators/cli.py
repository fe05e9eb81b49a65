"""``edgewarden twin``: serve a plant twin over OPC UA and Modbus TCP, or list plants.

    edgewarden twin serve cstr --opcua 127.0.0.1:4840 --modbus 127.0.0.1:5020 \\
        [--scan-ms 10] [--watchdog-ms 500] [--seed 0] [--time-scale 1] [--ready-file PATH]
    edgewarden twin list
    edgewarden twin fault --control HOST:PORT KIND TARGET [--sigma ...] | list | clear [ID]

``serve`` runs until SIGINT/SIGTERM, then stops cleanly (exit 0). When both servers are
listening it prints one line with both addresses and, with ``--ready-file``, writes
``{"opcua_url", "modbus_host", "modbus_port", "pid"}`` as JSON atomically (temp file +
rename) so a parent process can wait for the file to appear. ``--modbus none`` serves
OPC UA only. Port 0 picks a free port; the ready line and file carry the real one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path

from edgewarden.gateway.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    twin = subparsers.add_parser("twin", help="run a simulated plant + PLC (digital twin)",
                                 description=__doc__.split("\n\n")[0])
    sub = twin.add_subparsers(dest="twin_command", metavar="ACTION", required=True)

    serve = sub.add_parser("serve", help="serve a plant twin until SIGINT/SIGTERM")
    serve.add_argument("plant", metavar="PLANT", help="plant name (see 'twin list')")
    serve.add_argument("--opcua", default="127.0.0.1:4840", metavar="HOST:PORT",
                       help="OPC UA bind address (default 127.0.0.1:4840; port 0 = any free)")
    serve.add_argument("--modbus", default="127.0.0.1:5020", metavar="HOST:PORT",
                       help="Modbus TCP bind address, or 'none' (default 127.0.0.1:5020)")
    serve.add_argument("--scan-ms", type=float, default=10.0, help="PLC scan period (ms)")
    serve.add_argument("--watchdog-ms", type=float, default=500.0,
                       help="heartbeat watchdog: stall time before the PLC drops REMOTE (ms)")
    serve.add_argument("--seed", type=int, default=0, help="plant random seed")
    serve.add_argument("--time-scale", "--speed", type=float, default=1.0,
                       help="simulated seconds per real second (default 1: real time)")
    serve.add_argument("--word-order", choices=("big", "little"), default="big",
                       help="Modbus float32 word order (default big: high word first)")
    serve.add_argument("--modbus-unit-255", action="store_true",
                       help="answer Modbus unit id 255 too (Modbus TCP's 'not used' id), besides unit 1")
    serve.add_argument("--faults", metavar="HOST:PORT",
                       help="serve the fault-control endpoint here and put fault proxies in "
                            "front of both servers (see 'twin fault')")
    serve.add_argument("--secure", type=Path, metavar="CERT_DIR",
                       help="OPC UA Basic256Sha256 SignAndEncrypt only, certificate kept in "
                            "(or generated into) CERT_DIR; needs --users-file")
    serve.add_argument("--users-file", type=Path, metavar="PATH",
                       help="OPC UA users, one 'name:password' or 'name:password:viewer' "
                            "(read-only) per line")
    serve.add_argument("--ready-file", type=Path, metavar="PATH",
                       help="write a JSON file with the bound addresses once serving")
    serve.add_argument("-v", "--verbose", action="store_true",
                       help="show the OPC UA/Modbus libraries' own logs")
    serve.set_defaults(handler=_serve)

    lst = sub.add_parser("list", help="list the available plants")
    lst.set_defaults(handler=_list)

    fault = sub.add_parser(
        "fault", help="inject, list or clear faults in a running twin (served with --faults)",
        description="KIND TARGET injects (sensor kinds on a measurement tag: freeze, noise, "
                    "bias, drift, spike, bad, uncertain; network kinds on opcua|modbus|both: "
                    "drop, refuse, latency, hang, restart); 'list', 'clear [ID]', 'status'.")
    where = fault.add_mutually_exclusive_group(required=True)
    where.add_argument("--control", metavar="HOST:PORT", help="the twin's --faults address")
    where.add_argument("--ready-file", type=Path, metavar="PATH",
                       help="the twin's ready file (holds the control address)")
    fault.add_argument("action", metavar="KIND|list|clear|status")
    fault.add_argument("target", nargs="?", metavar="TARGET|ID")
    for name, text in (("value", "bias offset"), ("sigma", "noise std"),
                       ("rate", "drift per second"), ("magnitude", "spike size"),
                       ("prob", "spike probability per scan"), ("ms", "latency (ms)"),
                       ("duration", "clear by itself after this many seconds")):
        fault.add_argument(f"--{name}", type=float, help=text)
    fault.set_defaults(handler=_fault)


def parse_hostport(text: str, option: str) -> tuple[str, int]:
    """'HOST:PORT' or '[v6]:PORT' -> (host, port); ConfigError naming the option if bad."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{option}: expected HOST:PORT with a port 0-65535, got {text!r}")
    return host, int(port)


def _list(args: argparse.Namespace) -> int:
    from edgewarden.simulators.plants import plant_class, plant_names

    for name in plant_names():
        print(f"{name}\t{plant_class(name).spec.description}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from edgewarden.simulators.plants import plant_names

    if args.plant not in plant_names():
        raise ConfigError(f"unknown plant {args.plant!r} (known: {', '.join(plant_names())})")
    opcua = parse_hostport(args.opcua, "--opcua")
    modbus = None if args.modbus.lower() in ("none", "off") else parse_hostport(args.modbus,
                                                                               "--modbus")
    for option, value in (("--scan-ms", args.scan_ms), ("--watchdog-ms", args.watchdog_ms),
                          ("--time-scale", args.time_scale)):
        if not value > 0:
            raise ConfigError(f"{option} must be > 0, got {value}")
    if args.verbose:
        import logging

        logging.basicConfig(level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve_async(args, opcua, modbus))
    return 0


async def _serve_async(args: argparse.Namespace, opcua: tuple[str, int],
                       modbus: tuple[str, int] | None) -> None:
    from edgewarden.simulators.twin import Twin

    control = parse_hostport(args.faults, "--faults") if args.faults else None
    twin = Twin(args.plant, opcua=opcua, modbus=modbus, scan_ms=args.scan_ms,
                watchdog_ms=args.watchdog_ms, seed=args.seed, time_scale=args.time_scale,
                verbose=args.verbose, word_order=args.word_order, modbus_unit_255=args.modbus_unit_255,
                faults=control is not None, control=control, security=_security(args))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await twin.start()
        try:
            modbus_text = f"modbus=tcp://{twin.modbus_host}:{twin.modbus_port}" if modbus else \
                "modbus=off"
            control_text = (f" control=tcp://{control[0]}:{twin.control_port}"
                            if control else "")
            print(f"twin {args.plant} ready: opcua={twin.opcua_url} {modbus_text}"
                  f"{control_text}", flush=True)
            if args.ready_file is not None:
                ready = {"opcua_url": twin.opcua_url, "modbus_host": twin.modbus_host,
                         "modbus_port": twin.modbus_port, "pid": os.getpid()}
                if control:
                    ready |= {"control_host": control[0], "control_port": twin.control_port}
                _write_ready_file(args.ready_file, ready)
            await stop.wait()
        finally:
            await twin.stop()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    print(f"twin {args.plant} stopped", file=sys.stderr, flush=True)


def _security(args: argparse.Namespace):  # -> OpcUaSecurity | None
    if args.secure is None:
        if args.users_file is not None:
            raise ConfigError("--users-file needs --secure CERT_DIR")
        return None
    if args.users_file is None:
        raise ConfigError("--secure needs --users-file (anonymous access is refused)")
    from edgewarden.simulators.opcua_server import OpcUaSecurity

    try:
        lines = args.users_file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"--users-file {args.users_file}: {exc.strerror or exc}") from None
    users: dict[str, str] = {}
    viewers: set[str] = set()
    for n, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1] or (
                len(parts) == 3 and parts[2] != "viewer"):
            raise ConfigError(f"--users-file {args.users_file} line {n}: expected "
                              "'name:password' or 'name:password:viewer'")
        users[parts[0]] = parts[1]
        if len(parts) == 3:
            viewers.add(parts[0])
    if not users:
        raise ConfigError(f"--users-file {args.users_file}: no users")
    return OpcUaSecurity(args.secure, users, frozenset(viewers))


def _fault(args: argparse.Namespace) -> int:
    from edgewarden.simulators.fault_control import request

    if args.control is not None:
        host, port = parse_hostport(args.control, "--control")
    else:
        try:
            ready = json.loads(args.ready_file.read_text(encoding="utf-8"))
            host, port = ready["control_host"], int(ready["control_port"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"--ready-file {args.ready_file}: no control address in it "
                              f"({exc.__class__.__name__}); serve the twin with --faults"
                              ) from None
    action = args.action
    req: dict = {"op": action}
    if action == "clear":
        if args.target is not None:
            if not args.target.isdigit():
                raise ConfigError(f"clear: expected a fault id, got {args.target!r}")
            req["id"] = int(args.target)
    elif action not in ("list", "status"):
        if args.target is None:
            raise ConfigError(f"fault {action}: give a TARGET (a measurement tag, or "
                              "opcua|modbus|both)")
        req = {"op": "inject", "kind": action, "target": args.target}
        for name in ("value", "sigma", "rate", "magnitude", "prob", "ms"):
            if getattr(args, name) is not None:
                req[name] = getattr(args, name)
        if args.duration is not None:
            req["duration_s"] = args.duration
    answer = asyncio.run(request(host, port, req))
    if not answer.get("ok"):
        raise ConfigError(f"twin refused: {answer.get('error')}")
    answer.pop("ok")
    print(json.dumps(answer))
    return 0


def _write_ready_file(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ConfigError(f"--ready-file {path}: cannot write: {exc.strerror or exc}") from None
