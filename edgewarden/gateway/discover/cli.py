"""``edgewarden discover``: browse an OPC UA server, or import a Modbus register list, into
a draft config (docs/commissioning.md)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import re
import sys
from pathlib import Path

from edgewarden.gateway.errors import ConfigError, GatewayError

PASSWORD_ENV = "EDGEWARDEN_DISCOVER_PASSWORD"
# the connection schema names config keys; discover's user types flags
_FLAGS = {'security_policy = "Basic256Sha256"': "--security-policy Basic256Sha256",
          "allow_insecure = true": "--allow-insecure", "security_policy": "--security-policy",
          "server_certificate": "--server-certificate", "private_key": "--private-key",
          "certificate": "--certificate", "timeout_s": "--timeout", "application_uri": "--application-uri",
          "user_certificate": "--user-certificate", "user_private_key": "--user-private-key",
          "username": "--username"}
_FLAG_RE = re.compile("|".join(rf"(?<![\w-])(?<!server ){re.escape(k)}(?![\w-])" for k in _FLAGS))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("discover", help="browse an OPC UA server (or import a Modbus register list) into a "
                       "draft config whose open decisions are marked")
    p.add_argument("target", metavar="opc.tcp://HOST:PORT | modbus",
                   help="an OPC UA endpoint to browse, or 'modbus' with --from-csv")
    p.add_argument("--out", "-o", type=Path, help="write the draft here (default: standard output)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    ua_ = p.add_argument_group("OPC UA")
    ua_.add_argument("--root", help="browse only below this node (a NodeId string, e.g. ns=2;s=Line1); "
                     "default: the Objects folder")
    ua_.add_argument("--max-depth", type=int, default=8, help="levels below the root (default 8)")
    ua_.add_argument("--max-nodes", type=int, default=2000, help="nodes visited at most (default 2000)")
    ua_.add_argument("--timeout", type=float, default=5.0, help="per request, seconds (default 5)")
    ua_.add_argument("--security-policy", default="None", choices=("None", "Basic256Sha256", "Aes256Sha256RsaPss"))
    ua_.add_argument("--certificate", type=Path, help="client application certificate (edgewarden certs create)")
    ua_.add_argument("--private-key", type=Path)
    ua_.add_argument("--server-certificate", type=Path, help="the server's pinned certificate (edgewarden certs pin)")
    ua_.add_argument("--allow-insecure", action="store_true", help="browse a server off loopback without security")
    ua_.add_argument("--username", help=f"log in as this user (the password: ${PASSWORD_ENV}, or asked)")
    ua_.add_argument("--user-certificate", type=Path, help="log in with this user certificate instead of a "
                     "username (with --user-private-key)")
    ua_.add_argument("--user-private-key", type=Path)
    ua_.add_argument("--application-uri", help="the URI in --certificate (default urn:edgewarden:client, as "
                     "certs create makes it)")
    mb = p.add_argument_group("Modbus (a register list; Modbus cannot be browsed)")
    mb.add_argument("--from-csv", type=Path, metavar="FILE", help="the register list (format: docs/commissioning.md)")
    mb.add_argument("--host", default="127.0.0.1", help="the device's address (default 127.0.0.1)")
    mb.add_argument("--port", type=int, default=502)
    p.set_defaults(handler=_discover)


def _discover(args: argparse.Namespace) -> int:
    from edgewarden.gateway.discover.draft import render, summary
    from edgewarden.gateway.textout import write_text_out

    if args.target == "modbus":
        discovery = _modbus(args)
    elif args.target.startswith("opc.tcp://"):
        discovery = asyncio.run(_opcua(args))
    else:
        raise GatewayError(f"discover: {args.target!r} is neither an opc.tcp:// endpoint nor 'modbus'")
    command = (f"edgewarden discover {args.target}" + (f" --root {args.root}" if args.root else "")
               + (f" --from-csv {args.from_csv}" if args.from_csv else ""))
    write_text_out(render(discovery, command), args.out, force=args.force)
    print(f"discover: {summary(discovery)}" + (f"; stopped early: {discovery.truncated}" if discovery.truncated
                                                 else ""), file=sys.stderr)
    if args.out is not None:
        print(f"next: make the decisions marked DECIDE in {args.out}, then: edgewarden config check {args.out}",
              file=sys.stderr)
    return 0


def _modbus(args: argparse.Namespace):  # noqa: ANN202 (Discovery, imported lazily)
    from edgewarden.gateway.discover.draft import Discovery
    from edgewarden.gateway.discover.modbus_csv import read_register_list

    if args.from_csv is None:
        raise GatewayError("discover modbus needs --from-csv FILE: Modbus cannot be browsed (the format: "
                           "docs/commissioning.md)")
    found = read_register_list(args.from_csv)
    return Discovery({"type": "modbus", "host": args.host, "port": args.port}, found,
                     f"the register list {args.from_csv}")


async def _opcua(args: argparse.Namespace):  # noqa: ANN202 (Discovery, imported lazily)
    from asyncua import ua
    from pydantic import ValidationError

    from edgewarden.gateway.discover.draft import Discovery
    from edgewarden.gateway.discover.opcua import browse
    from edgewarden.gateway.io.opcua.connection import OpcUaConnection
    from edgewarden.gateway.io.opcua.session import close_quietly, open_client

    fields = {"url": args.target, "timeout_s": args.timeout, "security_policy": args.security_policy,
              "allow_insecure": args.allow_insecure, "certificate": args.certificate,
              "private_key": args.private_key, "server_certificate": args.server_certificate,
              "username": args.username, "application_uri": args.application_uri,
              "user_certificate": args.user_certificate, "user_private_key": args.user_private_key}
    fields = {k: (v.resolve() if isinstance(v, Path) else v)  # 0 is a value: only None and False are unset
              for k, v in fields.items() if v is not None and v is not False}
    password = None
    if args.username is not None:
        password = os.environ.get(PASSWORD_ENV)
        if password is None:
            password = getpass.getpass(f"OPC UA password for {args.username!r}: ") if sys.stdin.isatty() else ""
    try:
        spec = OpcUaConnection(**fields, password=password)
    except ValidationError as exc:
        from edgewarden.gateway.config import schema_problems

        problems = (_FLAG_RE.sub(lambda m: _FLAGS[m[0]], p.removeprefix("(top level): "))
                    for p in schema_problems(exc))
        raise ConfigError(f"discover: {'; '.join(problems)}") from None
    if args.max_depth < 1 or args.max_nodes < 1:
        raise GatewayError("discover: --max-depth and --max-nodes must be at least 1")
    try:
        root = ua.NodeId.from_string(args.root) if args.root else ua.NodeId(ua.ObjectIds.ObjectsFolder)
    except (ValueError, ua.UaError) as exc:
        raise GatewayError(f"discover: --root {args.root!r} is not a NodeId string ({exc})") from None
    logging.getLogger("asyncua").setLevel(logging.ERROR)  # its notices are not this command's output
    try:
        client = await open_client("discover", spec)
    except (TimeoutError, OSError, ua.UaError) as exc:
        raise GatewayError(f"discover: cannot reach {args.target}: {type(exc).__name__}: {exc or 'no answer'} "
                           "(is the server running, the address and port right?)") from None
    try:
        found, skipped, truncated = await browse(client, root, max_depth=args.max_depth, max_nodes=args.max_nodes,
                                                 timeout_s=args.timeout)
    except (TimeoutError, OSError, ua.UaError) as exc:
        raise GatewayError(f"discover: browsing {args.target} failed: {type(exc).__name__}: {exc}") from None
    finally:
        await close_quietly(client)
    connection = {"type": "opcua", "url": spec.url, "security_policy": spec.security_policy,
                  **{k: str(v) for k, v in fields.items() if k in ("certificate", "private_key",
                                                                     "server_certificate", "application_uri",
                                                                     "user_certificate", "user_private_key")},
                  **({"username": spec.username} if spec.username else {}),
                  **({"allow_insecure": True} if spec.allow_insecure else {})}
    if not found and not skipped:
        raise GatewayError(f"discover: no variables below {root.to_string()} at {args.target}"
                           + (f": the browse stopped early, {truncated}" if truncated else
                              " (another --root? more --max-depth?)"))
    below = "the Objects folder" if args.root is None else root.to_string()
    return Discovery(connection, found, f"{args.target}, below {below}", skipped, truncated)

