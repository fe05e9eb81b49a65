"""The audit log: append-only, hash-chained, crash-safe records of every decision.

Public surface: :class:`AuditWriter` (and its :class:`AuditStats`), :func:`verify` with
:class:`VerifyResult`, :func:`iter_records`, and for signed checkpoints :class:`Signer`,
:class:`Checkpoint`, :func:`generate_keypair`, :func:`load_public_key` and
:func:`read_exported`. The byte format is in ``docs/audit-format.md`` and
:mod:`edgewarden.gateway.audit.record`.
"""

from edgewarden.gateway.audit.checkpoint import Checkpoint, Signer, generate_keypair, load_public_key, read_exported
from edgewarden.gateway.audit.verify import DecodedRecord, VerifyResult, iter_records, verify
from edgewarden.gateway.audit.writer import AuditStats, AuditWriter

__all__ = ["AuditStats", "AuditWriter", "Checkpoint", "DecodedRecord", "Signer", "VerifyResult",
           "generate_keypair", "iter_records", "load_public_key", "read_exported", "verify"]
