"""``edgewarden service install``: place the unit, the config, the model and the keys.

Layout (under ``--root``, default ``/``):

    /etc/systemd/system/edgewarden.service            the unit (ExecStart → this edgewarden)
    /etc/systemd/system/edgewarden.service.d/realtime.conf   only with --realtime
    /etc/edgewarden/gateway.toml                       the config, its file paths rewritten:
    /etc/edgewarden/models/                            the policy (and its .sig)
    /etc/edgewarden/keys/                              audit signing key, model public key,
                                                       OPC UA certificates and keys (0640)
    /var/lib/edgewarden/audit                          the audit log (StateDirectory=)
    /run/edgewarden/control.sock                       the operator socket (RuntimeDirectory=)

The source config is validated first (a bad one installs nothing). With ``--root /`` the
service user is created if missing and the files are given to root:USER; enabling and
starting is left to the administrator (the command prints how).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from gateway.config import load_config
from gateway.errors import ConfigError, GatewayError

UNIT_DIR = Path(__file__).resolve().parents[2] / "systemd"
UNIT = "edgewarden.service"
STATE_DIR = "/var/lib/edgewarden"
SOCKET = "/run/edgewarden/control.sock"
_DEFAULT_EXEC = "/opt/edgewarden/.venv/bin/edgewarden"

# (section pattern, key) → where the file goes: "models", "keys", or a fixed path
_FILE_KEYS: list[tuple[str, str, str]] = [
    (r"policy", "path", "models"),
    (r"policy", "pubkey", "keys"),
    (r"audit", "signing_key", "keys"),
    (r"connections\.[^.]+", "certificate", "keys"),
    (r"connections\.[^.]+", "private_key", "keys"),
    (r"connections\.[^.]+", "server_certificate", "keys"),
    (r"connections\.[^.]+", "user_certificate", "keys"),
    (r"connections\.[^.]+", "user_private_key", "keys"),
]
_FIXED: dict[tuple[str, str], str] = {("audit", "dir"): f"{STATE_DIR}/audit", ("control", "socket"): SOCKET}
_SECTION = re.compile(r"^\s*\[([^\[\]]+)\]\s*(#.*)?$")
_KEY = re.compile(r'^(\s*)([A-Za-z0-9_]+)(\s*=\s*)"([^"]*)"(.*)$')


def _rewrite(text: str, src_dir: Path) -> tuple[str, list[tuple[Path, str]]]:
    """The config with installed paths, and the (source file, target subdir) to copy."""
    section = ""
    out, copies = [], []
    for line in text.splitlines(keepends=True):
        m = _SECTION.match(line)
        if m:
            section = m.group(1).strip()
            out.append(line)
            continue
        k = _KEY.match(line.rstrip("\n"))
        if k:
            indent, key, eq, value, rest = k.groups()
            fixed = _FIXED.get((section, key))
            if fixed is not None:
                line = f'{indent}{key}{eq}"{fixed}"{rest}\n'
            elif section == "audit" and key == "checkpoint_export" and not Path(value).is_absolute():
                line = f'{indent}{key}{eq}"{STATE_DIR}/{Path(value).name}"{rest}\n'
            else:
                for sec_pat, name, sub in _FILE_KEYS:
                    if key == name and re.fullmatch(sec_pat, section):
                        src = Path(value) if Path(value).is_absolute() else src_dir / value
                        copies.append((src, sub))
                        line = f'{indent}{key}{eq}"{sub}/{src.name}"{rest}\n'
                        break
        out.append(line)
    return "".join(out), copies


def _unit_text(executable: Path) -> str:
    path = UNIT_DIR / UNIT
    if not path.exists():
        raise GatewayError(f"the unit file {path} is not there: install from a source checkout or the "
                           "release tarball (systemd/ holds the unit)")
    return path.read_text().replace(_DEFAULT_EXEC, str(executable))


def install(config: Path, *, root: Path = Path("/"), user: str = "edgewarden", executable: Path | None = None,
            realtime: bool = False, force: bool = False) -> list[str]:
    """Install; returns the lines to print (what was placed, what to do next)."""
    loaded = load_config(config)  # a bad config installs nothing (ConfigError, exit 78)
    executable = executable or Path(sys.executable).parent / "edgewarden"
    if not executable.exists():
        raise ConfigError(f"the edgewarden executable {executable} does not exist (pass --executable)")
    live = root.resolve() == Path("/")
    etc = root / "etc" / "edgewarden"
    target = etc / "gateway.toml"
    if target.exists() and not force:
        raise ConfigError(f"{target} exists; pass --force to replace it (the old one is kept as .bak)")
    text, copies = _rewrite(Path(config).read_text(), loaded.path.parent)
    for src, _sub in copies:
        if not src.exists():
            raise ConfigError(f"{config}: the file {src} named in the config does not exist")

    placed = []
    for d, mode in ((etc, 0o750), (etc / "models", 0o750), (etc / "keys", 0o750),
                    (root / "etc" / "systemd" / "system", 0o755), (root / STATE_DIR.lstrip("/"), 0o750)):
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, mode)
    for src, sub in copies:
        dst = etc / sub / src.name
        shutil.copy2(src, dst)
        os.chmod(dst, 0o640)
        placed.append(dst)
        sig = src.with_name(src.name + ".sig")
        if sub == "models" and sig.exists():
            shutil.copy2(sig, dst.with_name(dst.name + ".sig"))
            placed.append(dst.with_name(dst.name + ".sig"))
    if target.exists():
        shutil.copy2(target, target.with_name("gateway.toml.bak"))
    target.write_text(text)
    os.chmod(target, 0o640)
    placed.append(target)
    load_config(target)  # the installed config must load as it stands

    unit = root / "etc" / "systemd" / "system" / UNIT
    unit.write_text(_unit_text(executable))
    os.chmod(unit, 0o644)
    placed.append(unit)
    if realtime:
        dropin = unit.with_name(UNIT + ".d")
        dropin.mkdir(exist_ok=True)
        shutil.copy2(UNIT_DIR / (UNIT + ".d") / "realtime.conf.example", dropin / "realtime.conf")
        placed.append(dropin / "realtime.conf")

    lines = [f"placed {p}" for p in placed]
    if live:
        lines += _live_setup(user, etc)
        lines += ["next: systemctl daemon-reload && systemctl enable --now edgewarden",
                  "      add operators to the group: usermod -aG " + user + " NAME",
                  "      watch it: edgewarden status --watch; journalctl -u edgewarden -f"]
    else:
        lines.append(f"installed under {root}; the service user {user!r} was not created (not the live root)")
    return lines


def _live_setup(user: str, etc: Path) -> list[str]:
    import grp
    import pwd

    lines = []
    try:
        pwd.getpwnam(user)
    except KeyError:
        nologin = "/usr/sbin/nologin" if Path("/usr/sbin/nologin").exists() else "/bin/false"
        try:
            subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
                            STATE_DIR, "--shell", nologin, user], check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise GatewayError(f"could not create the service user {user!r}: {exc}") from None
        lines.append(f"created system user {user!r}")
    gid = grp.getgrnam(user).gr_gid
    for path in [etc, *etc.rglob("*")]:
        os.chown(path, 0, gid)
    return lines
