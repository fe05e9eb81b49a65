"""The exception tree drawn in edgewarden/gateway/errors.py is the one that exists: every subclass of
GatewayError in the project appears in the drawing, under its parent, and nothing else does."""

from __future__ import annotations

import importlib
import pkgutil
import re

import edgewarden.gateway.errors
from edgewarden import gateway, hil, simulators, training
from edgewarden.gateway.errors import GatewayError


def _all_subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub, *_all_subclasses(sub)}
    return out


def test_the_drawn_tree_is_current() -> None:
    for package in (gateway, training, simulators, hil):
        for mod in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if mod.name.endswith("__main__"):
                continue
            importlib.import_module(mod.name)
    classes = {c for c in _all_subclasses(GatewayError) if c.__module__.startswith("edgewarden.")}
    drawing = edgewarden.gateway.errors.__doc__ or ""
    drawn: dict[str, str] = {}  # class -> parent, from the indentation of the drawing
    stack: list[tuple[int, str]] = []
    for line in drawing.splitlines():
        m = re.match(r"^(\s*)(?:[│ ]*[├└]── )?([A-Z]\w+Error|[A-Z]\w+Refused|GatewayError)\b", line)
        if not m:
            continue
        depth = line.index(m.group(2))
        while stack and stack[-1][0] >= depth:
            stack.pop()
        drawn[m.group(2)] = stack[-1][1] if stack else ""
        stack.append((depth, m.group(2)))
    assert set(drawn) - {"GatewayError"} == {c.__name__ for c in classes}
    for c in classes:
        assert drawn[c.__name__] == c.__mro__[1].__name__, c
