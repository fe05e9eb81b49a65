"""A small TOML writer (tomllib only reads): the generated configs (the HIL bench's, the
drafts of ``discover``) are written with it."""

from __future__ import annotations

import json
import math
import re
from typing import Any


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        if isinstance(v, float) and not math.isfinite(v):
            return "nan" if v != v else ("inf" if v > 0 else "-inf")
        return repr(v)
    if isinstance(v, str):  # UTF-8 as it is (units like °C stay readable); control characters escaped
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


_NOT_IN_COMMENT = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")


def toml_comment(text: str) -> str:
    """Text safe after ``#``: a line break or other control character (which could end the
    comment and start a live key or table) is written as its escape, visibly."""
    return _NOT_IN_COMMENT.sub(lambda m: json.dumps(m.group())[1:-1], text)


def toml_key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() and k.isascii() else json.dumps(k)


def _inline_ok(v: dict[str, Any]) -> bool:
    return all(not isinstance(x, dict) for x in v.values()) and len(v) <= 8 and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in v.values())


def dumps_toml(data: dict[str, Any], prefix: str = "") -> str:
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    for k, v in data.items():
        if isinstance(v, dict) and not _inline_ok(v):
            tables.append((k, v))
        elif isinstance(v, dict) and not v:
            continue
        else:
            lines.append(f"{toml_key(k)} = {toml_value(v)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in tables:
        name = f"{prefix}.{toml_key(k)}" if prefix else toml_key(k)
        body = dumps_toml(v, name)
        out += f"\n[{name}]\n{body}"
    return out
