"""Gateway sub-commands: ``run``, ``config check``, the operator commands (``status``,
``estop``, ``reset``, ``start``, ``override``, ``reload``; ``ctl`` is the older spelling
of the same), ``service install`` and ``demo``."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any

from edgewarden.gateway.config import LoadedConfig, Settings, load_config
from edgewarden.gateway.errors import GatewayError
from edgewarden.gateway.ops.service import OPERATORS_GROUP


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run the gateway daemon (as systemd does)")
    run.add_argument("--config", "-c", type=Path, required=True, help="TOML configuration file")
    run.set_defaults(handler=_run)

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", metavar="COMMAND", required=True)
    check = config_sub.add_parser("check", help="validate a configuration file and report every problem")
    check.add_argument("file", type=Path)
    check.set_defaults(handler=_config_check)
    ref = config_sub.add_parser("reference", help="print the configuration reference (every key, its "
                                "default and range), as in docs/configuration.md")
    ref.set_defaults(handler=_config_reference)
    ex = config_sub.add_parser("example", help="write a shipped example config (a twin's tag map, limits and "
                               "policy) to start a plant's config from")
    ex.add_argument("name", nargs="?", default="cstr", help="which example (default: cstr; "
                    "the list: edgewarden config example --list)")
    ex.add_argument("--out", "-o", type=Path, help="write it to this file (default: standard output)")
    ex.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    ex.add_argument("--list", action="store_true", help="list the shipped examples and exit")
    ex.set_defaults(handler=_config_example)

    _operator_commands(sub)

    ctl = sub.add_parser("ctl", help="operator commands to a running gateway (older spelling of "
                         "status/estop/reset/start/override)")
    _socket_args(ctl)
    ctl.add_argument("--actor", "--operator", dest="actor", default=None,
                     help="operator name recorded in the audit log (default: your login name)")
    ctl.add_argument("--reason", default="", help="free text recorded with the command")
    ctl.add_argument("--setpoint", action="append", default=[], metavar="ACTION=VALUE",
                     help="with 'manual': an operator setpoint, passed through the shield (repeatable)")
    ctl.add_argument("action", choices=["status", "estop", "reset", "start", "manual", "auto"],
                     help="manual: take manual control (human override); auto: hand back")
    ctl.set_defaults(handler=_ctl)

    service = sub.add_parser("service", help="install or remove the systemd service")
    service_sub = service.add_subparsers(dest="service_command", metavar="COMMAND", required=True)
    inst = service_sub.add_parser("install", help="place the unit, the config, the model and keys "
                                  "(see docs/operations.md)")
    inst.add_argument("--config", "-c", type=Path, required=True, help="the gateway config to install")
    inst.add_argument("--root", type=Path, default=Path("/"), help="install under this directory "
                      "instead of / (packaging, tests); skips user creation and systemctl")
    inst.add_argument("--user", default="edgewarden", help="service user and group (created if missing); "
                      "its group reads the config and keys: never put operators in it")
    inst.add_argument("--operators-group", default=OPERATORS_GROUP,
                      help="the group whose members may use the control socket (created if missing)")
    inst.add_argument("--dry-run", action="store_true", help="print every file, mode and owner; write nothing")
    inst.add_argument("--credential", action="append", default=[], metavar="NAME=FILE",
                      help="install FILE as the systemd credential NAME (a password_credential of the config), "
                           "0600 root:root; repeatable")
    inst.add_argument("--executable", type=Path, default=None,
                      help="the edgewarden executable for ExecStart (default: the one running this)")
    inst.add_argument("--realtime", action="store_true", help="also install the FIFO/CPU-affinity drop-in")
    inst.add_argument("--force", action="store_true", help="overwrite an existing config")
    inst.set_defaults(handler=_service_install)
    un = service_sub.add_parser("uninstall", help="remove the unit and /etc/edgewarden (the audit log is kept)")
    un.add_argument("--root", type=Path, default=Path("/"), help="as for install")
    un.add_argument("--dry-run", action="store_true", help="print what would be removed; remove nothing")
    un.set_defaults(handler=_service_uninstall)

    demo = sub.add_parser("demo", help="run the twin and the gateway on loopback for ~30 s")
    demo.add_argument("--seconds", type=float, default=30.0, help="length of the demo run")
    demo.add_argument("--workdir", type=Path, default=None,
                      help="keep the demo's config, audit log and logs here (default: a temp dir)")
    demo.set_defaults(handler=_demo)


def _run(args: argparse.Namespace) -> int:
    import faulthandler

    from edgewarden.gateway.app import run_daemon
    from edgewarden.gateway.logs import configure_logging

    faulthandler.enable()  # systemd's watchdog kills a hung loop with SIGABRT: the journal gets its traceback

    from edgewarden.gateway.config import check_host

    loaded = load_config(args.config)
    check_host(loaded)
    configure_logging(loaded.settings.logging)
    return run_daemon(loaded)


def _config_check(args: argparse.Namespace) -> int:
    from edgewarden.gateway.config import check_host, check_secrets
    from edgewarden.gateway.config_checks import warnings

    loaded = load_config(args.file)
    check_host(loaded)
    check_secrets(loaded)
    _check_policy(loaded)
    s = loaded.settings
    print(f"{args.file}: OK — {len(s.tags)} tags on {len(s.connections)} connection(s), "
          f"{len(s.policy.observations)} observations → {len(s.policy.actions)} actions at "
          f"{s.gateway.cycle_hz:g} Hz; policy {describe_policy(s)}")
    for line in warnings(s):
        print(f"warning: {args.file}: {line}", file=sys.stderr)
    return 0


def _check_policy(loaded: LoadedConfig) -> None:
    """The policy runs against these tags: the model loads as ``run`` would load it
    (signature, pin, contract against the tag map, graph, warm-up)."""
    from edgewarden.gateway.app import load_policy
    from edgewarden.gateway.config import invalid
    from edgewarden.gateway.errors import PolicyError

    try:
        load_policy(loaded.settings)
    except PolicyError as exc:
        raise invalid(loaded.path, [f"policy.path: {exc}"]) from None


def describe_policy(s: Settings) -> str:
    p = s.policy
    if p.kind == "onnx":
        return str(p.path)
    if p.kind == "pid":
        return f"pid ({len(p.pid)} loop(s): {', '.join(p.pid)}; the other actions hold)"
    return {"hold": "hold (keeps the applied values)", "monitor": "monitor (writes nothing, never starts)"}[p.kind]


def _config_reference(args: argparse.Namespace) -> int:
    from edgewarden.gateway.configdoc import render

    sys.stdout.write(render())
    return 0


def _config_example(args: argparse.Namespace) -> int:
    from edgewarden.gateway.example_config import example_names, standalone_example

    if args.list:
        print("\n".join(example_names()))
        return 0
    from edgewarden.gateway.textout import write_text_out

    write_text_out(standalone_example(args.name), args.out, force=args.force)
    if args.out is None:
        return 0
    print(f"wrote {args.out} (the {args.name} example); next: edgewarden config check {args.out}", file=sys.stderr)
    return 0


DEFAULT_CONFIG = Path("/etc/edgewarden/gateway.toml")
DEFAULT_SOCKET = Path("/run/edgewarden/control.sock")


def _socket_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", type=Path, help=f"config file, to find the control socket "
                   f"(default: {DEFAULT_CONFIG} if present)")
    p.add_argument("--socket", type=Path, help=f"control socket path (overrides --config; "
                   f"default: $EDGEWARDEN_SOCKET or {DEFAULT_SOCKET})")
    p.add_argument("--json", action="store_true", help="print the gateway's JSON reply")


def _operator_commands(sub: argparse._SubParsersAction) -> None:
    def op(name: str, help_: str, *, reason_required: bool = False,
           operator_required: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        _socket_args(p)
        p.add_argument("--operator", "--actor", dest="actor", default=None,
                       help="operator name recorded in the audit log (required: the person responsible)"
                       if operator_required else "operator name recorded in the audit log (default: your "
                       "login name)")
        p.add_argument("--reason", default="", required=reason_required, help="recorded with the command")
        p.set_defaults(handler=_operator, action=name, reason_required=reason_required,
                       operator_required=operator_required)
        return p

    st = sub.add_parser("status", help="live view of a running gateway: mode, timing, tags, trips")
    _socket_args(st)
    st.add_argument("--watch", "-w", type=float, nargs="?", const=1.0, default=None, metavar="SECONDS",
                    help="refresh every SECONDS (default 1) until Ctrl-C")
    st.set_defaults(handler=_status)
    op("estop", "latch the e-stop: safe outputs now")
    op("reset", "leave ESTOP for INHIBITED once the trip has cleared (never restarts)",
       reason_required=True, operator_required=True)
    op("start", "start control from READY (AUTO)")
    ov = op("override", "human override: take manual control, or release it (bumpless hand-back)")
    ov.add_argument("override", choices=["take", "release"])
    ov.add_argument("--setpoint", action="append", default=[], metavar="ACTION=VALUE",
                    help="with 'take': an operator setpoint, passed through the shield (repeatable)")
    op("reload", "reload the config file (as SIGHUP): limits, rates, interlocks, fallback tuning")


def _control_socket(args: argparse.Namespace) -> Path:
    from edgewarden.gateway.config import control_socket_of

    if args.socket is not None:
        return Path(args.socket)
    if args.config is not None:
        return control_socket_of(args.config)
    if os.environ.get("EDGEWARDEN_SOCKET"):
        return Path(os.environ["EDGEWARDEN_SOCKET"])
    if DEFAULT_CONFIG.exists():
        return control_socket_of(DEFAULT_CONFIG)
    return DEFAULT_SOCKET


def _send(args: argparse.Namespace, request: dict[str, Any]) -> dict[str, Any]:
    from edgewarden.gateway.ops.control import send_command

    return asyncio.run(send_command(_control_socket(args), request))


def _operator(args: argparse.Namespace) -> int:
    if getattr(args, "operator_required", False) and not (args.actor or "").strip():
        raise GatewayError(f"{args.action} needs --operator NAME (the person responsible, for the audit log)")
    if getattr(args, "reason_required", False) and not args.reason.strip():
        raise GatewayError(f"{args.action} needs --reason TEXT: why (recorded with your name in the audit log)")
    request: dict[str, Any] = {"cmd": args.action, "actor": args.actor or getpass.getuser(),
                               "reason": args.reason}
    if args.action == "override":
        request["action"] = args.override
        if args.setpoint:
            request["setpoints"] = _parse_setpoints(args.setpoint)
    reply = _send(args, request)
    if args.json:
        print(json.dumps(reply, indent=2))
    elif reply.get("ok"):
        extra = f" (staged: {', '.join(reply['staged'])})" if reply.get("staged") else ""
        print(f"{args.action}: ok — mode {reply.get('mode')}{extra}")
    else:
        print(f"{args.action}: refused — {reply.get('error')}", file=sys.stderr)
    return 0 if reply.get("ok") else 1


def _status(args: argparse.Namespace) -> int:
    import time

    from edgewarden.gateway.ops.statusview import render

    while True:
        try:
            reply = _send(args, {"cmd": "status"})
        except GatewayError as exc:
            if args.watch is None:
                raise
            # watching: the daemon restarting is when the operator needs the view most
            reply = {"ok": False, "unreachable": True,
                     "error": f"{exc} (retrying every {args.watch:g} s; Ctrl-C to stop)"}
        if args.json:
            print(json.dumps(reply, indent=2), flush=True)
        else:
            text = render(reply)
            if args.watch is not None and sys.stdout.isatty():
                text = "\x1b[H\x1b[2J" + text  # redraw in place
            print(text, flush=True)
        if args.watch is None:
            return 0 if reply.get("ok") else 1
        time.sleep(args.watch)


def _ctl(args: argparse.Namespace) -> int:
    request: dict[str, Any] = {"cmd": args.action, "actor": args.actor or getpass.getuser(),
                               "reason": args.reason}
    if args.setpoint:
        request["setpoints"] = _parse_setpoints(args.setpoint)
    reply = _send(args, request)
    print(json.dumps(reply, indent=2))
    return 0 if reply.get("ok") else 1


def _service_install(args: argparse.Namespace) -> int:
    from edgewarden.gateway.ops.service import install

    from edgewarden.gateway.errors import ConfigError

    credentials = {}
    for item in args.credential:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--credential {item!r}: expected NAME=FILE")
        credentials[name] = Path(path)
    for line in install(args.config, root=args.root, user=args.user, operators_group=args.operators_group,
                        executable=args.executable, realtime=args.realtime, force=args.force, dry_run=args.dry_run,
                        credentials=credentials):
        print(line)
    return 0


def _service_uninstall(args: argparse.Namespace) -> int:
    from edgewarden.gateway.ops.service import uninstall

    for line in uninstall(root=args.root, dry_run=args.dry_run):
        print(line)
    return 0


def _parse_setpoints(items: list[str]) -> dict[str, float]:
    from edgewarden.gateway.errors import ConfigError

    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise ConfigError(f"--setpoint {item!r}: expected ACTION=NUMBER, e.g. coolant_flow_sp=120")
    return out


def _demo(args: argparse.Namespace) -> int:
    from edgewarden.gateway.demo import run_demo

    return run_demo(seconds=args.seconds, workdir=args.workdir)
