"""Which ``EDGEWARDEN_*`` environment variables set which configuration key, so that a
variable that names no key is an error and a problem in a value set by a variable names
the variable (docs/configuration.md)."""

from __future__ import annotations

import typing
from typing import Annotated, Any

ENV_PREFIX = "EDGEWARDEN_"

# EDGEWARDEN_* variables that are not configuration keys: the CLI's socket, the safety
# kernel switch, the demo's output format and the test suite's switches
OTHER_VARIABLES = frozenset({"EDGEWARDEN_SOCKET", "EDGEWARDEN_SAFETY_KERNEL", "EDGEWARDEN_REQUIRE_SAFETY_KERNEL",
                             "EDGEWARDEN_DEMO_JSON", "EDGEWARDEN_SLOW", "EDGEWARDEN_HYPOTHESIS_EXAMPLES",
                             "EDGEWARDEN_FUZZ"})


def _schema_key(model: Any, parts: list[str]) -> bool:
    """Whether ``parts`` (lower case) name a key of ``model``: fields by name, one free
    segment for a dict's own key (a tag or connection name)."""
    if not parts:
        return True
    fields = getattr(model, "model_fields", None)
    if fields is None or parts[0] not in fields:
        return False
    annotation = fields[parts[0]].annotation
    return _annotation_key(annotation, parts[1:])


def _annotation_key(annotation: Any, rest: list[str]) -> bool:
    if not rest:
        return True
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is dict:  # the next part is the entry's name
        return _annotation_key(args[1], rest[1:])
    if origin is Annotated:
        return _annotation_key(args[0], rest)
    if args and origin is not list:  # a union: any member that has the key
        return any(_annotation_key(a, rest) for a in args)
    return _schema_key(annotation, rest)


def env_variables(environ: dict[str, str]) -> dict[tuple[str, ...], str]:
    """The configuration keys set by ``EDGEWARDEN_*`` variables: key path → variable name."""
    out = {}
    for name in environ:
        if name.startswith(ENV_PREFIX) and name not in OTHER_VARIABLES:
            out[tuple(name[len(ENV_PREFIX):].lower().split("__"))] = name
    return out


def env_problems(env: dict[tuple[str, ...], str], schema: Any) -> list[str]:
    """Variables that name no key of ``schema`` (the Settings model)."""
    return [f"{var} (environment): not a configuration key ({'.'.join(key)} is not in the schema); "
            f"other EDGEWARDEN_ variables: {', '.join(sorted(OTHER_VARIABLES))}"
            for key, var in env.items() if not _schema_key(schema, list(key))]


def from_env(problem_loc: tuple[Any, ...], env: dict[tuple[str, ...], str]) -> str:
    """The variable that set the value at ``problem_loc`` ("" when the file did)."""
    loc = tuple(str(p).lower() for p in problem_loc)
    for key, var in env.items():
        if loc[:len(key)] == key:
            return var
    return ""
