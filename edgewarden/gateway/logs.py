"""The daemon's log stream: one line per event on stdout (systemd hands it to journald),
JSON unless on a terminal, from our loggers and from the libraries' alike.

Every line carries ``timestamp``, ``level``, ``logger``, and, while a gateway runs, the
``cycle`` and ``mode`` it happened in. An exception is one field (``error``: its type and
first line), never a traceback. Under systemd (``JOURNAL_STREAM`` names our stdout) each
line starts with its syslog priority (``<3>`` for an error), which journald takes as the
entry's priority: ``journalctl -p err`` shows e-stops and refusals, not the info lines.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import structlog

from edgewarden.gateway.config import LoggingSection

_NOISY = ("asyncua", "pymodbus")  # protocol libraries log every revised parameter at WARNING
# syslog priorities of our levels (sd-daemon(3): journald reads a "<N>" line prefix)
_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "warn": 4, "error": 3, "exception": 3, "critical": 2}

# the running gateway's (cycle, mode), per context: each Gateway.run (and every task it
# starts) sees its own loop's, so two gateways in one process never mix their lines
_CONTEXT_OF: contextvars.ContextVar[Callable[[], tuple[int, str]]] = contextvars.ContextVar("edgewarden_context")


def stamp_context(context_of: Callable[[], tuple[int, str]]) -> None:
    """Events logged from this context on (and from tasks it starts) carry ``cycle`` and
    ``mode`` from ``context_of()``."""
    _CONTEXT_OF.set(context_of)


def get_logger(name: str) -> Any:
    """A structlog logger whose lines say ``logger = name``."""
    return structlog.get_logger(name)


class _NamedPrintLogger(structlog.PrintLogger):
    """structlog's PrintLogger with the name it was asked for (``add_logger_name`` reads it)."""

    def __init__(self, file: Any, name: str) -> None:
        super().__init__(file)
        self.name = name


class _NamedPrintLoggerFactory:
    def __init__(self, file: Any) -> None:
        self._file = file

    def __call__(self, *args: Any) -> _NamedPrintLogger:
        return _NamedPrintLogger(self._file, str(args[0]) if args else "edgewarden")


def _add_context(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    context_of = _CONTEXT_OF.get(None)
    if context_of is not None:
        cycle, mode = context_of()
        event.setdefault("cycle", cycle)
        event.setdefault("mode", mode)
    return event


def _one_line_error(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    """An exception becomes ``error = "Type: first line"``: the log is read by operators."""
    exc_info = event.pop("exc_info", None)
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if isinstance(exc_info, tuple) and exc_info[1] is not None:
        text = str(exc_info[1]).splitlines()
        event.setdefault("error", f"{exc_info[0].__name__}: {text[0]}" if text else exc_info[0].__name__)
    event.pop("stack_info", None)
    return event


def _journal_stream(stream: Any) -> bool:
    """Whether ``stream`` is the journal's stream this process was given (JOURNAL_STREAM=dev:ino)."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


class _Prefixed:
    """The renderer, with the syslog priority in front of each line for journald."""

    def __init__(self, renderer: Any) -> None:
        self._renderer = renderer

    def __call__(self, logger: Any, name: str, event: dict[str, Any]) -> str:
        return f"<{_PRIORITY.get(str(event.get('level', 'info')), 6)}>{self._renderer(logger, name, event)}"


def configure_logging(cfg: LoggingSection, *, stream: Any = None) -> None:
    """structlog: JSON lines (journald, log shippers) unless on a terminal or told "console";
    the standard library's loggers (asyncua, pymodbus, ours) through the same chain.

    Nothing is logged per cycle at INFO: mode changes, trips, operator commands, reloads and
    connection changes are.
    """
    stream = sys.stdout if stream is None else stream
    level = getattr(logging, cfg.level.upper())
    fmt = cfg.format
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer: Any = (structlog.processors.JSONRenderer() if fmt == "json"
                     else structlog.dev.ConsoleRenderer(colors=stream.isatty()))
    if _journal_stream(stream):
        renderer = _Prefixed(renderer)
    shared: list[Any] = [
        structlog.stdlib.add_logger_name,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_context,
        _one_line_error,
    ]
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_NamedPrintLoggerFactory(stream),
        cache_logger_on_first_use=False,  # SIGHUP may change the level
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.contextvars.merge_contextvars, *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer]))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.ERROR)
