"""The control socket's request schema: one pydantic model per command.

Every line a client sends is parsed (strict JSON, bounded nesting) and validated against
the model of its ``cmd`` before anything acts on it; what fails gets an error reply that
names the field. Types are strict: an ``actor`` that is a list, a ``reason`` that is an
object or a setpoint that is a string is refused, never stored as its Python repr.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

MAX_LINE = 64 * 1024  # bytes of one request line

Actor = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, max_length=1024)]
Required = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1024)]


def _finite(values: dict[str, float]) -> dict[str, float]:
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    if bad:
        raise ValueError(f"setpoints must be finite numbers: {', '.join(bad)}")
    return values


Setpoints = Annotated[dict[Annotated[str, StringConstraints(min_length=1, max_length=128)], float],
                      Field(max_length=256), AfterValidator(_finite)]


class _Request(BaseModel):
    # strict: JSON types only (no "1" for 1, no list for a string); unknown keys refused
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Status(_Request):
    cmd: Literal["status"]
    actor: Reason | None = None  # the older `ctl status` sends them; not needed
    reason: Reason = ""


class Estop(_Request):
    cmd: Literal["estop"]
    actor: Actor
    reason: Reason = ""


class Reset(_Request):
    cmd: Literal["reset"]
    actor: Actor
    reason: Required  # why the trip is cleared: on record with the name of who cleared it


class Start(_Request):
    cmd: Literal["start"]
    actor: Actor
    reason: Reason = ""


class Manual(_Request):
    cmd: Literal["manual"]
    actor: Actor
    reason: Reason = ""
    setpoints: Setpoints | None = None


class Auto(_Request):
    cmd: Literal["auto"]
    actor: Actor
    reason: Reason = ""


class Override(_Request):
    cmd: Literal["override"]
    action: Literal["take", "release"]
    actor: Actor
    reason: Reason = ""
    setpoints: Setpoints | None = None


class Reload(_Request):
    cmd: Literal["reload"]
    actor: Actor
    reason: Reason = ""


class Model(_Request):
    cmd: Literal["model"]
    action: Literal["load", "shadow", "promote", "rollback", "status", "authority"]
    actor: Actor
    reason: Reason = ""
    path: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = None
    force: bool = False
    band: Literal["full", "start"] | Annotated[dict[Annotated[str, StringConstraints(max_length=256)], float],
                                               Field(min_length=1, max_length=256)] | None = None
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$")] | None = None


class Excite(_Request):
    cmd: Literal["excite"]
    action: Literal["start", "stop", "status"]
    actor: Actor
    reason: Reason = ""
    signal: Literal["prbs", "steps"] = "prbs"
    amplitude: Annotated[dict[Annotated[str, StringConstraints(min_length=1, max_length=128)], float],
                         Field(max_length=256), AfterValidator(_finite)] | None = None
    hold_s: float = 5.0
    duration_s: float = 600.0
    seed: Annotated[int, Field(ge=0, lt=2**63)] | None = None


Request = Annotated[Status | Estop | Reset | Start | Manual | Auto | Override | Reload | Model | Excite,
                    Field(discriminator="cmd")]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(Request)
COMMANDS = ("status", "estop", "reset", "start", "manual", "auto", "override", "reload", "model", "excite")


class BadRequest(ValueError):
    """A request line that is not a valid command; the message is the error reply."""


def parse_line(line: bytes) -> dict[str, Any]:
    """The JSON object on ``line``. Raises :class:`BadRequest` for anything else."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"request is not UTF-8 (byte {exc.start})") from None
    try:
        value = orjson.loads(text)  # strict JSON; nesting is bounded (no recursion error)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request is not one JSON object on one line: {exc}") from None
    if not isinstance(value, dict):
        raise BadRequest("request is not a JSON object")
    return value


def validate(request: dict[str, Any]) -> dict[str, Any]:
    """The request checked against its command's schema, with defaults filled in.
    Raises :class:`BadRequest` naming the first field that is wrong."""
    cmd = request.get("cmd")
    if not isinstance(cmd, str) or cmd not in COMMANDS:
        raise BadRequest(f"unknown command {cmd!r}; known: {sorted(COMMANDS)}")
    try:
        model = _ADAPTER.validate_python(request)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        where = ".".join(str(x) for x in errors[0]["loc"][1:]) or "request"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise BadRequest(f"{cmd}: {where}: {errors[0]['msg']}{more}") from None
    return model.model_dump()
