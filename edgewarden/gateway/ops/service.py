"""``edgewarden service install``: place the unit, the config, the model and the keys.

Layout (under ``--root``, default ``/``):

    /etc/systemd/system/edgewarden.service            the unit (ExecStart → this edgewarden)
    /etc/systemd/system/edgewarden.service.d/realtime.conf   only with --realtime
    /etc/edgewarden/gateway.toml                       the config, its file paths rewritten:
    /etc/edgewarden/models/                            the policy (and its .sig)
    /etc/edgewarden/credentials/NAME                  a password_credential (0600 root:root; LoadCredential=)
    /etc/edgewarden/keys/                              audit signing key, model public key,
                                                       OPC UA certificates and keys (0640
                                                       root:USER; operators are not in USER)
    /var/lib/edgewarden/audit                          the audit log (StateDirectory=)
    /run/edgewarden/control.sock                       the operator socket (RuntimeDirectory=)

Two groups: USER's own group reads the config and the keys; the operators' group
(``--operators-group``, default ``edgewarden-ops``) may open the control socket and
nothing else (the installed config sets ``[control] operators_group`` to it; the unit
adds it to the service's supplementary groups so the daemon can give the socket to it).

Everything is planned and checked first (the source config, every file it names, the
rewritten config); ``--dry-run`` prints the plan (path, mode, owner) and writes nothing.
The files are then written beside their targets and renamed into place; a failure undoes
what was placed. With ``--root /`` the service user and the operators' group are created
if missing and ownership is set; enabling and starting is left to the administrator (the
command prints how). ``service uninstall`` removes what install placed and keeps the
audit log.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from edgewarden.data import SYSTEMD
from edgewarden.gateway.config import load_config
from edgewarden.gateway.errors import ConfigError, GatewayError

UNIT_DIR = SYSTEMD
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


OPERATORS_GROUP = "edgewarden-ops"
_OPS_LINE = re.compile(r"^\s*operators_group\s*=", re.M)


@dataclass(frozen=True)
class Item:
    """One thing install places: a directory (``data`` None) or a file, its mode and owner."""

    path: Path
    mode: int
    group: str  # the owner is root, but for the state directory (the service user)
    data: bytes | None = None
    owner: str = "root"

    def describe(self) -> str:
        kind = "dir " if self.data is None else "file"
        return f"{kind} {self.path} {self.mode:04o} {self.owner}:{self.group}" + (
            f" ({len(self.data)} bytes)" if self.data is not None else "")


def _docs_uri() -> str | None:
    docs = Path(__file__).resolve().parents[3] / "docs" / "operations.md"  # a checkout's
    return docs.as_uri() if docs.is_file() else None


def _unit_text(executable: Path, user: str, operators_group: str) -> str:
    path = UNIT_DIR / UNIT
    if not path.exists():
        raise GatewayError(f"the unit file {path} is not there: this edgewarden install is incomplete "
                           "(the wheel ships it as package data; reinstall edgewarden)")
    text = path.read_text().replace(_DEFAULT_EXEC, str(executable))
    text = re.sub(r"^User=.*$", f"User={user}", text, flags=re.M)
    text = re.sub(r"^Group=.*$", f"Group={user}", text, flags=re.M)
    text = re.sub(r"^SupplementaryGroups=.*$", f"SupplementaryGroups={operators_group}", text, flags=re.M)
    docs = _docs_uri()  # only a page that is there
    return re.sub(r"^Documentation=file://.*\n", f"Documentation={docs}\n" if docs else "", text, flags=re.M)


def _with_operators_group(text: str, group: str) -> str:
    """The config with ``[control] operators_group`` set, when it does not set one."""
    if _OPS_LINE.search(text):
        return text
    line = f'operators_group = "{group}"          # added by service install: may open the socket\n'
    m = re.search(r"^\s*\[control\]\s*(#.*)?$\n?", text, flags=re.M)
    if m:
        return text[:m.end()] + line + text[m.end():]
    return text.rstrip("\n") + "\n\n[control]\n" + line


CREDENTIALS = "/etc/edgewarden/credentials"


def _with_credentials(unit: str, names: list[str]) -> str:
    """``LoadCredential=`` for each credential the config names (systemd reads them as root
    and hands the service a private copy in $CREDENTIALS_DIRECTORY)."""
    if not names:
        return unit
    lines = "".join(f"LoadCredential={n}:{CREDENTIALS}/{n}\n" for n in names)
    return re.sub(r"^(ExecReload=.*\n)", lambda m: m.group(1) + lines, unit, count=1, flags=re.M)


@dataclass(frozen=True)
class Plan:
    items: list[Item]
    credentials: list[str]  # the config's password_credential names (LoadCredential= in the unit)


def plan(config: Path, *, root: Path, user: str, operators_group: str, executable: Path,
         realtime: bool, credentials: dict[str, Path] | None = None) -> Plan:
    """What install places, every source checked; raises ConfigError before anything is written."""
    loaded = load_config(config)  # a bad config installs nothing (ConfigError, exit 78)
    if not executable.exists():
        raise ConfigError(f"the edgewarden executable {executable} does not exist (pass --executable)")
    etc = root / "etc" / "edgewarden"
    text, copies = _rewrite(Path(config).read_text(), loaded.path.parent)
    text = _with_operators_group(text, operators_group)
    items = [Item(etc, 0o750, user), Item(etc / "models", 0o750, user), Item(etc / "keys", 0o750, user),
             Item(root / "etc" / "systemd" / "system", 0o755, "root"),
             Item(root / STATE_DIR.lstrip("/"), 0o750, user, owner=user)]
    for src, sub in copies:
        if not src.is_file():
            raise ConfigError(f"{config}: the file {src} named in the config does not exist")
        items.append(Item(etc / sub / src.name, 0o640, user, src.read_bytes()))
        sig = src.with_name(src.name + ".sig")
        if sub == "models" and sig.is_file():
            items.append(Item(etc / sub / sig.name, 0o640, user, sig.read_bytes()))
    items.append(Item(etc / "gateway.toml", 0o640, user, text.encode()))
    names = sorted({c.password_credential for c in loaded.settings.connections.values()
                    if getattr(c, "password_credential", None)})
    unknown = sorted(set(credentials or {}) - set(names))
    if unknown:
        raise ConfigError(f"--credential {', '.join(unknown)}: the config names no such password_credential "
                          f"(it names: {', '.join(names) or 'none'})")
    if credentials:
        items.append(Item(root / CREDENTIALS.lstrip("/"), 0o700, "root"))
        for name, src in sorted(credentials.items()):
            if not Path(src).is_file():
                raise ConfigError(f"--credential {name}={src}: no such file")
            items.append(Item(root / CREDENTIALS.lstrip("/") / name, 0o600, "root", Path(src).read_bytes()))
    unit = root / "etc" / "systemd" / "system" / UNIT
    items.append(Item(unit, 0o644, "root",
                      _with_credentials(_unit_text(executable, user, operators_group), names).encode()))
    if realtime:
        items.append(Item(unit.with_name(UNIT + ".d"), 0o755, "root"))
        items.append(Item(unit.with_name(UNIT + ".d") / "realtime.conf", 0o644, "root",
                          (UNIT_DIR / (UNIT + ".d") / "realtime.conf.example").read_bytes()))
    for item in items:
        if item.path.exists() and item.path.is_dir() != (item.data is None):
            raise ConfigError(f"{item.path} is in the way: a {'file' if item.data is None else 'directory'} "
                              "stands where install puts the other; nothing was changed")
    return Plan(items, names)


def install(config: Path, *, root: Path = Path("/"), user: str = "edgewarden",
            operators_group: str = OPERATORS_GROUP, executable: Path | None = None, realtime: bool = False,
            force: bool = False, dry_run: bool = False, credentials: dict[str, Path] | None = None) -> list[str]:
    """Install; returns the lines to print (what was placed, what to do next)."""
    executable = executable or Path(sys.executable).parent / "edgewarden"
    planned = plan(config, root=root, user=user, operators_group=operators_group, executable=executable,
                   realtime=realtime, credentials=credentials)
    items = planned.items
    target = root / "etc" / "edgewarden" / "gateway.toml"
    if target.exists() and not force:
        raise ConfigError(f"{target} exists; pass --force to replace it (the old one is kept as .bak)")
    live = root.resolve() == Path("/")
    if dry_run:
        return ([f"would place {item.describe()}" for item in items]
                + ([f"would keep the existing {target} as gateway.toml.bak"] if target.exists() else [])
                + ([f"would create the system user {user!r} and the group {operators_group!r} where missing"]
                   if live else []) + ["dry run: nothing was written"])
    _check_installed_config(items, target)
    lines = _live_accounts(user, operators_group) if live else []
    placed = _place(items, target, chown=live)
    lines += [f"placed {item.describe()}" for item in placed]
    for name in planned.credentials:
        if not (root / CREDENTIALS.lstrip("/") / name).exists():
            lines.append(f"next: put the password in {CREDENTIALS}/{name} (0600 root:root; --credential "
                         f"{name}=FILE does it); systemd hands the service a private copy")
    if live:
        lines += ["next: systemctl daemon-reload && systemctl enable --now edgewarden",
                  f"      operators: usermod -aG {operators_group} NAME (never the group {user!r}: it reads the keys)",
                  "      watch it: edgewarden status --watch; journalctl -u edgewarden -f"]
    else:
        lines.append(f"installed under {root}; no user or group was created (not the live root)")
    return lines


def _check_installed_config(items: list[Item], target: Path) -> None:
    """The installed config must load as it stands, its files where install puts them."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="edgewarden-install-") as tmp:
        base = Path(tmp)
        etc = target.parent
        for item in items:
            if item.data is not None and item.path.is_relative_to(etc):
                dst = base / item.path.relative_to(etc)
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_bytes(item.data)
        load_config(base / "gateway.toml")


def _place(items: list[Item], target: Path, *, chown: bool) -> list[Item]:
    """Write every item (a file beside its target, then renamed into place); on a failure,
    undo what was placed and put back what was replaced. The replaced config is kept as
    ``gateway.toml.bak``."""
    made: list[Path] = []  # created here: removed on failure
    replaced: list[tuple[Path, Path]] = []  # (target, its previous file, set aside)
    try:
        for item in items:
            if item.data is None:
                if not item.path.exists():
                    item.path.mkdir(parents=True)
                    made.append(item.path)
                os.chmod(item.path, item.mode)
            else:
                tmp = item.path.with_name(f".{item.path.name}.new")
                made.append(tmp)
                tmp.write_bytes(item.data)
                os.chmod(tmp, item.mode)
                if item.path.exists():
                    saved = item.path.with_name(f".{item.path.name}.old")
                    os.replace(item.path, saved)
                    replaced.append((item.path, saved))
                else:
                    made.append(item.path)
                os.replace(tmp, item.path)
            if chown:
                _chown(item)
    except BaseException:
        for path, saved in reversed(replaced):
            with contextlib.suppress(OSError):
                os.replace(saved, path)
        for path in reversed(made):
            with contextlib.suppress(OSError):
                path.rmdir() if path.is_dir() else path.unlink(missing_ok=True)
        raise
    for path, saved in replaced:
        with contextlib.suppress(OSError):  # placed already: a stale copy left behind harms nothing
            if path == target:
                os.replace(saved, target.with_name("gateway.toml.bak"))
            else:
                saved.unlink()
    return items


def _chown(item: Item) -> None:
    import grp
    import pwd

    os.chown(item.path, pwd.getpwnam(item.owner).pw_uid, grp.getgrnam(item.group).gr_gid)


def uninstall(*, root: Path = Path("/"), dry_run: bool = False) -> list[str]:
    """Remove the unit, its drop-ins and /etc/edgewarden; keep the audit log (evidence)."""
    import shutil

    unit = root / "etc" / "systemd" / "system" / UNIT
    targets = [p for p in (unit, unit.with_name(UNIT + ".d"), root / "etc" / "edgewarden") if p.exists()]
    state = root / STATE_DIR.lstrip("/")
    verb = "would remove" if dry_run else "removed"
    lines = [f"{verb} {p}" for p in targets]
    if not dry_run:
        for p in targets:
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
    if state.exists():
        lines.append(f"kept {state} (the audit log: export it, then remove it yourself)")
    if root.resolve() == Path("/") and not dry_run:
        lines.append("next: systemctl daemon-reload (stop and disable the service first if it runs)")
    return lines or ["nothing to remove"]


def _live_accounts(user: str, operators_group: str) -> list[str]:
    import grp
    import pwd

    lines = []
    try:
        pwd.getpwnam(user)
    except KeyError:
        nologin = "/usr/sbin/nologin" if Path("/usr/sbin/nologin").exists() else "/bin/false"
        _run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", STATE_DIR,
              "--shell", nologin, user], f"could not create the service user {user!r}")
        lines.append(f"created system user {user!r}")
    try:
        grp.getgrnam(operators_group)
    except KeyError:
        _run(["groupadd", "--system", operators_group], f"could not create the group {operators_group!r}")
        lines.append(f"created group {operators_group!r} (operators: usermod -aG {operators_group} NAME)")
    return lines


def _run(cmd: list[str], what: str) -> None:
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise GatewayError(f"{what}: {exc}") from None
