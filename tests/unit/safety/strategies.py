"""Hypothesis strategies shared by the safety property tests: random but valid gateway
configurations (observations with ranges, staleness, frozen-value checks and limits; actions with bounds,
rates and safe values; interlocks with random clauses) and the awkward numbers that the
safety layer must survive (NaN, ±inf, exact bounds, huge magnitudes).

Settings are built directly (``Settings(**dict)``) and then cross-checked with the same
function ``load_config`` uses, so every generated configuration is one a user could load.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from edgewarden.gateway.config import Settings
from edgewarden.gateway.config_checks import cross_problems
from edgewarden.gateway.safety.expr import parse_clause

HUGE = 1e300
SPECIALS = (math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-300, -1e-300, HUGE, -HUGE, 1.7976931348623157e308,
            -1.7976931348623157e308)

# moderate numbers, so that bounds, limits and readings overlap often enough to matter
moderate = st.floats(min_value=-1000.0, max_value=1000.0, allow_nan=False, allow_infinity=False)
finite = st.one_of(moderate, st.floats(allow_nan=False, allow_infinity=False),
                   st.sampled_from([0.0, -0.0, 1e-300, HUGE, -HUGE]))


def pair(elements: st.SearchStrategy[float] = moderate) -> st.SearchStrategy[tuple[float, float]]:
    """[low, high] with low <= high (sometimes equal)."""
    return st.one_of(
        st.tuples(elements, elements).map(lambda p: (min(p), max(p))),
        elements.map(lambda x: (x, x)),
    )


def number_text(x: float) -> str:
    """A float as the interlock grammar writes it, exactly round-tripping."""
    text = repr(float(x))
    assert parse_clause(f"t <= {text}").value == x
    return text


@dataclass
class Plant:
    """A generated configuration and the constants worth probing inputs at."""

    settings: Settings
    obs: list[str]
    extra: list[str]            # limit-only tags (monitored, not policy inputs)
    actions: list[str]
    interesting: list[float] = field(default_factory=list)


def _tag(**kw: Any) -> dict[str, Any]:
    return {"connection": "plc", "node": f"ns=2;s={kw.pop('name')}", **kw}


@st.composite
def plants(draw: st.DrawFn, max_obs: int = 16, max_actions: int = 16, max_interlocks: int = 8) -> Plant:
    n_obs = draw(st.integers(1, max_obs))
    n_extra = draw(st.integers(0, 2))
    n_act = draw(st.integers(1, max_actions))
    obs = [f"o{i}" for i in range(n_obs)]
    extra = [f"x{i}" for i in range(n_extra)]
    actions = [f"a{i}" for i in range(n_act)]
    interesting: list[float] = []

    tags: dict[str, dict[str, Any]] = {}
    limits: dict[str, dict[str, Any]] = {}
    for name in obs + extra:
        spec: dict[str, Any] = {}
        if draw(st.booleans()):
            spec["range"] = draw(pair())
            interesting += spec["range"]
        if draw(st.integers(0, 3)) == 0:
            spec["stale_ms"] = draw(st.sampled_from([101.0, 150.0, 1000.0, 5000.0]))  # > one 10 Hz cycle
        if draw(st.integers(0, 3)) == 0:
            spec["freeze_s"] = draw(st.sampled_from([0.2, 1.0, 5.0]))
        tags[name] = _tag(name=name, **spec)
        lim: dict[str, Any] = {}
        if name in extra or draw(st.booleans()):
            if draw(st.booleans()):
                lim["hard"] = draw(pair())
                interesting += lim["hard"]
            if draw(st.booleans()):  # a soft band lies within the hard one (config check refuses others)
                lo, hi = lim.get("hard", (-1000.0, 1000.0))
                lim["soft"] = draw(pair(st.floats(min_value=lo, max_value=hi, allow_nan=False)))
                interesting += lim["soft"]
            if draw(st.booleans()):
                lim["max_rate"] = draw(st.sampled_from([1e-3, 1.0, 20.0, 1e3, 1e300]))
            limits[name] = lim
    safety: dict[str, Any] = {"heartbeat_tag": "hb", "limits": limits}
    tags["hb"] = _tag(name="hb", datatype="uint32", writable=True)
    if draw(st.booleans()):
        tags["estop"] = _tag(name="estop", datatype="bool")
        safety["estop_input"] = "estop"
    if draw(st.booleans()):
        tags["auto"] = _tag(name="auto", datatype="bool")
        safety["hand_auto_tag"] = "auto"

    act_specs: dict[str, dict[str, Any]] = {}
    for name in actions:
        lo, hi = draw(pair(finite if draw(st.integers(0, 4)) == 0 else moderate))
        safe = draw(st.sampled_from([lo, hi, lo / 2 + hi / 2]))
        spec = {"min": lo, "max": hi, "safe": min(max(safe, lo), hi)}
        if draw(st.integers(0, 3)):
            spec["max_rate"] = draw(st.sampled_from([1e-9, 0.5, 1.0, 50.0, 100.0, 1e6, HUGE]))
        act_specs[name] = spec
        tags[name] = _tag(name=name, writable=True)
        interesting += [lo, hi]

    interlocks: dict[str, dict[str, str]] = {}
    monitored_pool = obs + extra
    for k in range(draw(st.integers(0, max_interlocks))):
        clauses = []
        for _ in range(draw(st.integers(1, 3))):
            tag = draw(st.sampled_from(monitored_pool))
            op = draw(st.sampled_from(["<", "<=", ">", ">="]))
            value = draw(st.one_of(moderate, st.sampled_from(interesting or [0.0])))
            interesting.append(value)
            clauses.append(f"{tag} {op} {number_text(value)}")
        act = draw(st.sampled_from(actions))
        spec = act_specs[act]
        upper = draw(st.booleans())
        # the safe value must satisfy every interlock (the config check insists)
        lo, hi = (spec["safe"], spec["max"]) if upper else (spec["min"], spec["safe"])
        limit = draw(st.one_of(st.sampled_from([lo, hi]), st.floats(lo, hi)) if lo < hi else st.just(lo))
        interlocks[f"il{k}"] = {"when": " and ".join(clauses),
                                "then": f"{act} {'<=' if upper else '>='} {number_text(limit)}"}
        interesting.append(limit)
    safety["actions"] = act_specs
    safety["interlocks"] = interlocks

    settings = Settings(
        connections={"plc": {"type": "opcua", "url": "opc.tcp://127.0.0.1:4840"}},
        tags=tags,
        policy={"path": "policy.onnx", "observations": obs, "actions": actions},
        safety=safety,
    )
    problems = cross_problems(settings)
    assert not problems, problems
    return Plant(settings, obs, extra, actions, interesting)


def readings(plant: Plant) -> st.SearchStrategy[float]:
    """A reading: mostly ordinary, often exactly at a configured constant, sometimes awful."""
    return st.one_of(
        moderate,
        st.sampled_from(plant.interesting or [0.0]),
        st.sampled_from(SPECIALS),
        st.floats(),
    )


def _interval(a: float, b: float) -> st.SearchStrategy[float]:
    return st.one_of(st.sampled_from([a, b]), st.floats(a, b)) if a < b else st.just(a)


def plausible(plant: Plant, name: str) -> st.SearchStrategy[float]:
    """A reading a healthy plant gives: inside the tag's valid range and its hard limits
    (when they overlap), often exactly at a soft or hard bound."""
    s = plant.settings
    lo, hi = -1000.0, 1000.0
    rng = s.tags[name].range
    if rng is not None:
        lo, hi = rng
    lim = s.safety.limits.get(name)
    if lim is not None and lim.hard is not None and max(lo, lim.hard[0]) <= min(hi, lim.hard[1]):
        lo, hi = max(lo, lim.hard[0]), min(hi, lim.hard[1])
    choices = [_interval(lo, hi)]
    if lim is not None and lim.soft is not None:
        choices.append(st.sampled_from([x for x in lim.soft if lo <= x <= hi] or [lo]))
    return st.one_of(*choices)
