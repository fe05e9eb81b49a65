"""Signed checkpoints: an Ed25519 signature over (sequence, chain head, time).

A checkpoint says "the record with sequence ``seq`` has hash ``head``", signed with the
gateway's private key. It is written into the log as a ``checkpoint`` record (the record
right after the one it covers) and exported off the box as one JSON line. Holding only
the public key and an exported line, anyone can show that a log was cut short or
rewritten: the log must contain record ``seq`` with exactly that hash.

Signed message (fixed binary layout, 56 bytes, see docs/audit-format.md)::

    "EWCKPT01" | u64 seq | head[32] | i64 t_wall_ns        (big-endian)

Key files: the private key is PKCS#8 PEM (mode 0600), the public key
SubjectPublicKeyInfo PEM. ``key_id`` = first 16 hex digits of SHA-256 of the raw 32-byte
public key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgewarden.gateway.audit.files import drop_torn_line, write_all, write_file
from edgewarden.gateway.errors import AuditError
from edgewarden.gateway.readfile import read_regular, read_text

MAGIC = b"EWCKPT01"
_MSG = struct.Struct(">8sQ32sq")
KIND = "checkpoint"


def message(seq: int, head: bytes, t_wall_ns: int) -> bytes:
    """The exact bytes a checkpoint signature covers."""
    return _MSG.pack(MAGIC, seq, head, t_wall_ns)


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    seq: int  # the record covered (the last one before the checkpoint record)
    head: str  # hex SHA-256 of that record
    t_wall_ns: int
    key_id: str
    sig: str  # base64 Ed25519 signature of message(seq, head, t_wall_ns)

    def payload(self) -> dict[str, Any]:
        """Fields of the ``checkpoint`` record and of an exported line."""
        return {"seq": self.seq, "head": self.head, "t_wall_ns": self.t_wall_ns,
                "key_id": self.key_id, "sig": self.sig}

    def line(self) -> str:
        return json.dumps(self.payload(), sort_keys=True, separators=(",", ":")) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Checkpoint:
        try:
            seq, head, t, kid, sig = d["seq"], d["head"], d["t_wall_ns"], d["key_id"], d["sig"]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"checkpoint lacks field {exc}") from None
        if not (type(seq) is int and type(t) is int and isinstance(head, str) and len(head) == 64
                and isinstance(kid, str) and isinstance(sig, str)):
            raise ValueError("checkpoint fields have wrong types")
        return cls(seq, head, t, kid, sig)

    def verify(self, public: Ed25519PublicKey) -> str | None:
        """None if the signature is good for ``public``; else what is wrong."""
        if self.key_id != key_id(public):
            return f"signed by key {self.key_id}, not by the given key {key_id(public)}"
        try:
            head = bytes.fromhex(self.head)
            public.verify(base64.b64decode(self.sig, validate=True), message(self.seq, head, self.t_wall_ns))
        except (ValueError, InvalidSignature):
            return "bad signature"
        return None


class Signer:
    """Signs checkpoints with a private key (loaded once; ~50 us per signature)."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._key = private
        self.key_id = key_id(private.public_key())

    @classmethod
    def from_file(cls, path: Path) -> Signer:
        return cls(load_private_key(path))

    def sign(self, seq: int, head: bytes, t_wall_ns: int) -> Checkpoint:
        sig = self._key.sign(message(seq, head, t_wall_ns))
        return Checkpoint(seq, head.hex(), t_wall_ns, self.key_id, base64.b64encode(sig).decode("ascii"))


def generate_keypair(private_path: Path, public_path: Path, *, overwrite: bool = False) -> str:
    """Write a new key pair (private 0600, public 0644); return its key id."""
    private_path, public_path = Path(private_path), Path(public_path)
    for p in (private_path, public_path):
        if p.exists() and not overwrite:
            raise AuditError(f"{p} already exists; refusing to overwrite a key (use --force)")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        private_path.parent.mkdir(parents=True, exist_ok=True)
        public_path.parent.mkdir(parents=True, exist_ok=True)
        write_file(private_path, pem, 0o600)
        write_file(public_path, pub, 0o644)
    except OSError as exc:
        raise AuditError(f"cannot write key pair: {exc}") from None
    return key_id(key.public_key())


_KEY_MAX_BYTES = 65536  # a PEM key: a few hundred bytes
_EXPORT_MAX_BYTES = 1 << 30  # an exported checkpoint file: a line per checkpoint (~250 bytes)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    path = Path(path)
    data = read_regular(path, what="signing key", max_bytes=_KEY_MAX_BYTES, error=AuditError)
    mode = path.stat().st_mode
    if mode & 0o077:
        raise AuditError(f"signing key {path} is readable by group or others (mode {mode & 0o777:o}); "
                         f"run chmod 600 {path}")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise AuditError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditError(f"{path} is not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    path = Path(path)
    data = read_regular(path, what="public key", max_bytes=_KEY_MAX_BYTES, error=AuditError)
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise AuditError(f"{path} is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise AuditError(f"{path} is not an Ed25519 public key")
    return key


def append_exported(path: Path, checkpoints: list[Checkpoint]) -> None:
    """Append ``checkpoints`` to an export file as JSON lines and fsync it; a torn last
    line (a crash mid-export) is cut first so the new lines start clean. OSError on failure."""
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        drop_torn_line(fd)
        write_all(fd, "".join(c.line() for c in checkpoints).encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointFileError(AuditError):
    """A complete line of an exported checkpoint file is not a checkpoint: the evidence
    itself was altered, so verification against it fails (exit 1, not an I/O error)."""


def read_exported(path: Path) -> list[Checkpoint]:
    """Checkpoints from an export file (JSON lines). A torn last line is ignored; a
    complete line that is not a checkpoint raises :class:`CheckpointFileError`."""
    text = read_text(path, what="checkpoint file", max_bytes=_EXPORT_MAX_BYTES, error=AuditError)
    out = []
    lines = text.split("\n")
    complete, last = lines[:-1], lines[-1]
    for n, line in enumerate(complete, 1):
        if not line.strip():
            continue
        try:
            out.append(Checkpoint.from_dict(json.loads(line)))
        except ValueError as exc:
            raise CheckpointFileError(f"{path}, line {n}: not a checkpoint: {exc}") from None
    del last  # no newline: a write cut short, never completed, never relied on
    return out
