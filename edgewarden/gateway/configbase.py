"""The building blocks every configuration model shares (edgewarden/gateway/config.py and each
protocol's connection model under edgewarden/gateway/io/): strict sections, true/false flags,
non-empty paths, finite ranges."""

from __future__ import annotations

import ipaddress
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict

DataType = Literal["double", "float", "float32", "bool", "int16", "uint16", "int32", "uint32"]


class Section(BaseModel):
    # allow_inf_nan: an infinite timeout or limit is never what a plant means
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _flag(value: Any) -> Any:
    """true/false only: TOML booleans, or "true"/"false" from an environment variable
    (pydantic alone would also take "yes", "on", "1", "y" ...)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError("must be true or false")


def _nonempty_path(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        raise ValueError("must not be empty (an empty path would mean the config file's directory)")
    return value


Flag = Annotated[bool, BeforeValidator(_flag)]
FilePath = Annotated[Path, BeforeValidator(_nonempty_path)]
Range = tuple[float, float]


def check_range(value: Range | None, what: str) -> Range | None:
    if value is not None:
        lo, hi = value
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
            raise ValueError(f"{what} must be two finite numbers [low, high] with low <= high, got {list(value)}")
    return value


def on_loopback(host: str | None) -> bool:
    """Whether ``host`` is this machine, by name or address (no name lookup)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False
