"""The exception hierarchy of edgewarden, drawn whole (tests/unit/test_errors.py keeps
this drawing equal to the classes that exist).

    GatewayError                 base: every error a user may see; its str() is the message
    ├── ConfigError              a bad configuration file or value (names file and key)   exit 78
    ├── TransportError           a PLC/SCADA connection failed or answered badly           exit 69
    │   ├── WriteError           a write not acknowledged by every planned tag (outcome per tag;
    │   │                        edgewarden/gateway/io/transport.py)
    │   ├── ProtocolError        a peer's reply of the wrong shape (count, function code, length):
    │   │                        a fault of the link, handled as one (the link is dropped)
    │   └── AccessError          the server refuses the gateway's identity writes it must make  exit 78
    ├── PolicyError              a model refused at load or failed at run time             exit 65
    ├── AuditError               the audit log cannot be written, read or trusted          exit 74
    │   ├── ChainError           the log is not intact at a place (edgewarden/gateway/audit/record.py)
    │   └── CheckpointFileError  an exported checkpoint file that cannot be read
    │                            (edgewarden/gateway/audit/checkpoint.py)
    ├── ModeRefused              an operator command the mode machine refuses (edgewarden/gateway/modes.py)  exit 2
    ├── DatasetError             a training dataset that cannot be used (edgewarden/training/datasets.py)
    └── PreflightRefused         an external PLC not in a safe state for the bench (edgewarden/hil/runner.py)  exit 69

A trip is not an exception: the cycle and the e-stop (edgewarden/gateway/safety/estop.py) pass a
reason code and a message. Callers catch the base classes. The CLI turns a GatewayError
into a one-paragraph message and its exit code; no stack trace reaches a user for these.
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


class ProtocolError(TransportError):
    """A reply that does not have the shape its request asks for: fewer or more results
    than nodes read, another function code, too few registers. The link is not to be
    trusted: the read marks its values NO_DATA and drops it, a write is not acknowledged."""


class AccessError(TransportError):
    """The server answers but does not let the configured identity write the tags the
    gateway writes: a configuration matter, so exit 78 (no restart)."""

    exit_code = 78


class PolicyError(GatewayError):
    """A model that does not fit the plant, or that failed while running."""

    exit_code = 65  # EX_DATAERR


class AuditError(GatewayError):
    """The audit log cannot be written (fatal to AUTO), read, or verified."""

    exit_code = 74  # EX_IOERR
