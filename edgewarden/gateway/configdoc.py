"""The configuration reference, rendered from the schema itself (``edgewarden config
reference``): every key with its type, default, allowed range and meaning, so that the
documented ranges are the enforced ones. docs/configuration.md is this output, and a
test keeps it so."""

from __future__ import annotations

import types
import typing
from typing import Any

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from edgewarden.gateway.config import Settings
from edgewarden.gateway.config_env import ENV_PREFIX, OTHER_VARIABLES
from edgewarden.gateway.io.protocols import PROTOCOLS

# sections keyed by a user's name ([tags.NAME]...) and the model of each entry
_NAMED = {"connections": tuple(p.connection for p in PROTOCOLS.values()), "tags": None}

HEADER = """# Configuration reference

Generated from the schema (`edgewarden config reference`; `edgewarden/gateway/config.py` is the
source): every key, its type, default, the range `edgewarden config check` enforces and
what it means. Numbers must be finite (`inf`/`nan` are refused everywhere); flags are
`true` or `false` only. Relative paths are relative to the config file's directory.
Besides the schema, `config check` refuses combinations (cross-references, the time
budget, soft limits outside hard ones, two tags on one source) and what this machine
lacks (the model file, the operators' group; `run` refuses them too), and names each
problem as `FILE: key.path: what is wrong` (`VARIABLE (environment): key.path: …` for a
value an environment variable set); it exits 78. Allowed but insecure settings (an
unsecured link off loopback) are printed as warnings.

Every key can be set from the environment: `EDGEWARDEN_SECTION__KEY` (e.g.
`EDGEWARDEN_GATEWAY__CYCLE_HZ=50`, `EDGEWARDEN_CONNECTIONS__PLC1__PASSWORD=…`; names of
tags and connections in variables are lower-cased). A value from a variable overrides
the file and is named by its variable in any error. An `EDGEWARDEN_` variable that is
not a key is refused, except: {other}.
"""


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args if a is not type(None)) + (
            " (optional)" if type(None) in args else "")
    if origin is typing.Literal:
        return " \\| ".join(f"`{a!r}`".replace("'", '"') for a in args)
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is tuple:
        return "[low, high]"
    if origin is dict:
        return "table, one entry per name" if _is_model(args[1]) else f"table of {_type_name(args[1])}"
    name = getattr(annotation, "__name__", str(annotation))
    return {"float": "number", "int": "integer", "str": "string", "bool": "true/false", "Path": "path"}.get(
        name, name)


def _range(info: FieldInfo) -> str:
    parts = []
    for m in info.metadata:
        for cls, attr, sym in ((Gt, "gt", ">"), (Ge, "ge", "≥"), (Lt, "lt", "<"), (Le, "le", "≤")):
            if isinstance(m, cls):
                bound = getattr(m, attr)
                parts.append(f"{sym} {bound:,}".replace(",", " ") if isinstance(bound, (int, float)) else f"{sym} {bound}")
        if isinstance(m, MinLen):
            parts.append(f"at least {m.min_length} long")
        if isinstance(m, MaxLen):
            parts.append(f"at most {m.max_length} long")
    return ", ".join(parts)


def _default(info: FieldInfo) -> str:
    if info.default is PydanticUndefined and info.default_factory is None:
        return "required"
    value = info.default_factory() if info.default_factory is not None else info.default  # type: ignore[call-arg]
    if value is None:
        return "none"
    if isinstance(value, BaseModel):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict, str)) and not value:
        return "empty"
    return f"`{value}`"


def _rows(model: type[BaseModel]) -> list[str]:
    rows = []
    for key, info in model.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            continue  # a sub-section: its own table
        desc = (info.description or "").replace("|", "\\|")
        rows.append(f"| `{key}` | {_type_name(info.annotation)} | {_default(info)} | {_range(info)} | {desc} |")
    return rows


def _table(title: str, model: type[BaseModel], doc: str | None = None) -> list[str]:
    out = [f"## `{title}`", ""]
    text = " ".join((doc if doc is not None else model.__doc__ or "").split())
    if text:
        out += [text, ""]
    out += ["| key | type | default | range | meaning |", "|---|---|---|---|---|", *_rows(model), ""]
    for key, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += _table(f"{title}.{key}", ann)
        elif typing.get_origin(ann) is dict and _is_model(typing.get_args(ann)[1]):
            out += _table(f"{title}.{key}.NAME", typing.get_args(ann)[1])
    return out


def _is_model(x: Any) -> bool:
    return isinstance(x, type) and issubclass(x, BaseModel)


def render() -> str:
    lines = [HEADER.format(other=", ".join(f"`{v}`" for v in sorted(OTHER_VARIABLES))).rstrip(), ""]
    for section, info in Settings.model_fields.items():
        ann = info.annotation
        if typing.get_origin(ann) is dict:
            entry = typing.get_args(ann)[1]
            models = _NAMED.get(section) or (entry,)
            for m in models:
                kind = typing.get_args(m.model_fields["type"].annotation) if "type" in m.model_fields else ()
                label = f"{section}.NAME" + (f" (type = \"{kind[0]}\")" if kind else "")
                lines += _table(label, m)
        elif isinstance(ann, type) and issubclass(ann, BaseModel):
            lines += _table(section, ann)
    lines.append(f"(`{ENV_PREFIX}` variables: see the top of this page.)")
    return "\n".join(lines) + "\n"
