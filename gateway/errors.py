"""The exception hierarchy of edgewarden.

    GatewayError                 base: every error a user may see; its str() is the message
    ├── ConfigError              a bad configuration file or value (names file and key)
    ├── TransportError           a PLC/SCADA connection failed or answered badly
    ├── SafetyTrip               a condition that latches the e-stop (carries a reason code)
    ├── PolicyError              a model refused at load or failed at run time
    └── AuditError               the audit log cannot be written, read or trusted

Callers catch the base classes. The CLI turns a GatewayError into a one-paragraph
message and an exit code; no stack trace reaches a user for these.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error meant for a user. ``exit_code`` is what the CLI exits with."""

    exit_code: int = 1


class ConfigError(GatewayError):
    """A configuration problem. Exit code 78 (EX_CONFIG): systemd must not restart on it."""

    exit_code = 78


class TransportError(GatewayError):
    """A connection to a PLC or server failed, timed out or answered with an error."""

    exit_code = 69  # EX_UNAVAILABLE


class SafetyTrip(GatewayError):
    """A condition that trips the latched e-stop. ``code`` is a stable reason code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class PolicyError(GatewayError):
    """A model that does not fit the plant, or that failed while running."""

    exit_code = 65  # EX_DATAERR


class AuditError(GatewayError):
    """The audit log cannot be written (fatal to AUTO), read, or verified."""

    exit_code = 74  # EX_IOERR
