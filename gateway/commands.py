"""Gateway sub-commands: ``run``, ``config check``, ``ctl`` (operator) and ``demo``."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from pathlib import Path
from typing import Any

from gateway.config import load_config


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run the gateway daemon (as systemd does)")
    run.add_argument("--config", "-c", type=Path, required=True, help="TOML configuration file")
    run.set_defaults(handler=_run)

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", metavar="COMMAND", required=True)
    check = config_sub.add_parser("check", help="validate a configuration file and report every problem")
    check.add_argument("file", type=Path)
    check.set_defaults(handler=_config_check)

    ctl = sub.add_parser("ctl", help="operator commands to a running gateway")
    ctl.add_argument("--config", "-c", type=Path, help="config file (to find the control socket)")
    ctl.add_argument("--socket", type=Path, help="control socket path (overrides --config)")
    ctl.add_argument("--actor", default=None, help="operator name recorded in the audit log "
                     "(default: your login name)")
    ctl.add_argument("--reason", default="", help="free text recorded with the command")
    ctl.add_argument("--setpoint", action="append", default=[], metavar="ACTION=VALUE",
                     help="with 'manual': an operator setpoint, passed through the shield (repeatable)")
    ctl.add_argument("action", choices=["status", "estop", "reset", "start", "manual", "auto"],
                     help="manual: take manual control (human override); auto: hand back")
    ctl.set_defaults(handler=_ctl)

    demo = sub.add_parser("demo", help="run the twin and the gateway on loopback for ~30 s")
    demo.add_argument("--seconds", type=float, default=30.0, help="length of the demo run")
    demo.add_argument("--workdir", type=Path, default=None,
                      help="keep the demo's config, audit log and logs here (default: a temp dir)")
    demo.set_defaults(handler=_demo)


def _run(args: argparse.Namespace) -> int:
    from gateway.app import Gateway, configure_logging

    loaded = load_config(args.config)
    configure_logging(loaded.settings.logging)
    return asyncio.run(Gateway(loaded).run())


def _config_check(args: argparse.Namespace) -> int:
    loaded = load_config(args.file)
    s = loaded.settings
    print(f"{args.file}: OK — {len(s.tags)} tags on {len(s.connections)} connection(s), "
          f"{len(s.policy.observations)} observations → {len(s.policy.actions)} actions at "
          f"{s.gateway.cycle_hz:g} Hz; policy {s.policy.path}")
    if not s.policy.path.exists():
        print(f"warning: the policy file {s.policy.path} does not exist yet", file=sys.stderr)
    return 0


def _ctl(args: argparse.Namespace) -> int:
    from gateway.errors import ConfigError
    from gateway.ops.control import send_command

    if args.socket is not None:
        path = args.socket
    elif args.config is not None:
        path = load_config(args.config).settings.control.socket
    else:
        raise ConfigError("ctl needs --config FILE or --socket PATH to find the gateway")
    request: dict[str, Any] = {"cmd": args.action, "actor": args.actor or getpass.getuser(),
                               "reason": args.reason}
    if args.setpoint:
        request["setpoints"] = _parse_setpoints(args.setpoint)
    reply = asyncio.run(send_command(path, request))
    print(json.dumps(reply, indent=2))
    return 0 if reply.get("ok") else 1


def _parse_setpoints(items: list[str]) -> dict[str, float]:
    from gateway.errors import ConfigError

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
    from gateway.demo import run_demo

    return run_demo(seconds=args.seconds, workdir=args.workdir)
