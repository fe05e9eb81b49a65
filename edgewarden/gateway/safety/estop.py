"""The latched e-stop path: one-way, idempotent, and isolated from its own failures.

``trip`` moves the mode machine to ESTOP synchronously (so the very next line of the
cycle sees it), then runs its handlers in order — write the safe outputs, make the trip
durable in the audit log, count it — each isolated so that one failing handler cannot
stop the others. A second trip while latched runs nothing. The safe write goes straight
to the transport: no queue, no policy, no metrics in front of it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from edgewarden.gateway.logs import get_logger
from edgewarden.gateway.modes import Mode, ModeMachine

Handler = Callable[["TripEvent"], Awaitable[None]]


@dataclass(frozen=True)
class TripEvent:
    code: str
    message: str
    actor: str


class EStop:
    def __init__(self, modes: ModeMachine, handlers: list[tuple[str, Handler]]) -> None:
        self._modes = modes
        self._handlers = handlers
        self.last: TripEvent | None = None
        self.count = 0
        self.handler_failures: list[str] = []
        self._log = get_logger("edgewarden.estop")

    def add_handler(self, name: str, handler: Handler) -> None:
        """Append a handler; handlers run in the order they were added."""
        self._handlers.append((name, handler))

    @property
    def latched(self) -> bool:
        return self._modes.mode == Mode.ESTOP

    async def trip(self, code: str, message: str, actor: str = "gateway") -> bool:
        """Latch ESTOP and run the handlers once. Returns False if already latched."""
        if self._modes.mode == Mode.ESTOP:
            return False
        event = TripEvent(code, message, actor)
        self.last = event
        self.count += 1
        try:
            self._modes.request(Mode.ESTOP, reason=f"{code}: {message}", actor=actor)
        except Exception as exc:  # noqa: BLE001 - a failing listener (the mode is ESTOP by then) stops nothing
            self.handler_failures.append(f"mode: {exc}")
            self._log.error("e-stop mode listener failed", error=f"{type(exc).__name__}: {exc}")
        for name, handler in self._handlers:
            try:
                await handler(event)
            except Exception as exc:  # noqa: BLE001 - isolate: the next handler must still run
                self.handler_failures.append(f"{name}: {exc}")
                self._log.error("e-stop handler failed", handler=name, error=f"{type(exc).__name__}: {exc}")
        return True
