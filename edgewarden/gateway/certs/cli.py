"""``edgewarden certs create | pin | show``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from edgewarden.gateway.errors import GatewayError


def register(sub: argparse._SubParsersAction) -> None:
    certs = sub.add_parser("certs", help="the OPC UA client certificate and the pinned server certificate")
    cs = certs.add_subparsers(dest="certs_command", metavar="COMMAND", required=True)
    c = cs.add_parser("create", help="make the gateway's application certificate (DER and PEM) and private key (0600)")
    c.add_argument("--out-dir", type=Path, default=Path("."), help="where to write them (default: here)")
    c.add_argument("--uri", default="urn:edgewarden:client",
                   help="the application URI (the connection's application_uri; default urn:edgewarden:client)")
    c.add_argument("--name", default="edgewarden-client", help="the certificate's common name and file stem")
    c.add_argument("--days", type=int, default=730, help="validity in days (default 730)")
    c.add_argument("--host", help="the DNS name in the certificate (default: this host's name)")
    c.add_argument("--force", action="store_true", help="replace existing files")
    c.set_defaults(handler=_create)
    p = cs.add_parser("pin", help="fetch an OPC UA server's certificate, show it and write it to pin")
    p.add_argument("url", help="opc.tcp://HOST:PORT")
    p.add_argument("--out", "-o", type=Path, default=Path("server.der"), help="where to write it (default server.der)")
    p.add_argument("--policy", choices=("Basic256Sha256", "Aes256Sha256RsaPss"), help="the endpoint's policy")
    p.add_argument("--yes", action="store_true", help="write it without asking (after comparing the fingerprint)")
    p.add_argument("--timeout", type=float, default=5.0)
    p.set_defaults(handler=_pin)
    s = cs.add_parser("show", help="what a certificate file says (subject, validity, URI, SHA-256)")
    s.add_argument("file", type=Path)
    s.set_defaults(handler=_show)


def _create(args: argparse.Namespace) -> int:
    from edgewarden.gateway.certs.files import create

    made = create(args.out_dir, uri=args.uri, name=args.name, days=args.days, host=args.host, force=args.force)
    print("\n".join(made.info.lines()))
    print(f"wrote {made.certificate_der} and {made.certificate_pem} (certificate), {made.private_key} (key, 0600)")
    print("in the connection ([connections.NAME]):")
    print(f'  certificate = "{made.certificate_der.resolve()}"\n  private_key = "{made.private_key.resolve()}"\n'
          f'  application_uri = "{args.uri}"')
    print("and make the server trust the certificate (its administrator adds it to the trusted list).")
    return 0


def _pin(args: argparse.Namespace) -> int:
    from edgewarden.gateway.certs.files import info, load, write_public
    from edgewarden.gateway.certs.pin import fetch

    der, offered = asyncio.run(fetch(args.url, args.policy, args.timeout))
    print(f"{args.url} offers: {', '.join(offered)}")
    print("\n".join(info(load(der)).lines()))
    if not args.yes:
        if not sys.stdin.isatty():
            raise GatewayError("certs pin: compare the SHA-256 above with the server's own (ask its administrator), "
                               "then run again with --yes to write it")
        if input(f"pin this certificate in {args.out}? [y/N] ").strip().lower() not in ("y", "yes"):
            print("not written")
            return 1
    write_public(args.out, der)
    print(f"wrote {args.out}; in the connection: server_certificate = \"{args.out.resolve()}\"")
    return 0


def _show(args: argparse.Namespace) -> int:
    from edgewarden.gateway.certs.files import read_info

    print("\n".join(read_info(args.file).lines()))
    return 0
