"""The daemon's log stream: structlog to stdout (systemd hands it to journald), JSON
lines unless on a terminal, every event stamped with the cycle it happened in."""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Callable
from typing import Any

import structlog

from gateway.config import LoggingSection

_NOISY = ("asyncua", "pymodbus")


# the running Gateway's cycle count, per context: each Gateway.run (and every task it
# starts) sees its own loop's, so two gateways in one process never mix their cycles
_CYCLE_OF: contextvars.ContextVar[Callable[[], int | None]] = contextvars.ContextVar("edgewarden_cycle_of")


def _add_cycle(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    """Correlation: every event carries the cycle it happened in (``cid`` comes from contextvars)."""
    cycle_of = _CYCLE_OF.get(None)
    cycle = cycle_of() if cycle_of is not None else None
    if cycle is not None:
        event.setdefault("cycle", cycle)
    return event


def configure_logging(cfg: LoggingSection, *, stream: Any = None) -> None:
    """structlog: JSON lines (journald, log shippers) unless on a terminal or told "console".

    Logs go to stdout (systemd hands it to journald). Nothing is logged per cycle at INFO:
    mode changes, trips, operator commands, reloads and connection changes are.
    """
    stream = sys.stdout if stream is None else stream
    level = getattr(logging, cfg.level.upper())
    fmt = cfg.format
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer: Any = (structlog.processors.JSONRenderer() if fmt == "json"
                     else structlog.dev.ConsoleRenderer(colors=stream.isatty()))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _add_cycle,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,  # SIGHUP may change the level
    )
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    for name in _NOISY:  # protocol libraries log every revised parameter at WARNING
        logging.getLogger(name).setLevel(logging.ERROR)


def stamp_cycles(cycle_of: Callable[[], int | None]) -> None:
    """Events logged from this context on (and from tasks it starts) carry ``cycle_of()``."""
    _CYCLE_OF.set(cycle_of)
