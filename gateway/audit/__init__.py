"""The audit log: append-only, hash-chained, crash-safe records of every decision.

Public surface: :class:`AuditWriter` (and its :class:`AuditStats`), :func:`verify` with
:class:`VerifyResult`, and :func:`iter_records`. The byte format is in
``docs/audit-format.md`` and :mod:`gateway.audit.record`.
"""

from gateway.audit.verify import DecodedRecord, VerifyResult, iter_records, verify
from gateway.audit.writer import AuditStats, AuditWriter

__all__ = ["AuditStats", "AuditWriter", "DecodedRecord", "VerifyResult", "iter_records", "verify"]
