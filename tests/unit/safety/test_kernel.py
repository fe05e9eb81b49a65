"""The compiled safety kernel and its numpy fallback: the choice between them, every
checker rule and shield case on both, and the kernel's refusal of arrays it cannot use.

The property tests (test_checker_properties.py, test_shield_properties.py) compare both
backends with plain references on generated configurations; this file pins the rules one
by one on a hand-written plant, and the edges: NaN and ±inf, no interlocks, dt = 0, zero
actions, history carried over by a reload, wrong array types and sizes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from edgewarden.gateway.config import Settings
from edgewarden.gateway.config_checks import cross_problems
from edgewarden.gateway.errors import ConfigError
from edgewarden.gateway.io.tags import Quality, Snapshot, TagMap
from edgewarden.gateway.safety import backend as backends
from edgewarden.gateway.safety.checker import ObservationChecker, Status, Verdict
from edgewarden.gateway.safety.interlocks import Interlocks
from edgewarden.gateway.safety.shield import ActionShield
from tests.unit.safety.backends import BUILT, CHECKER_STATE, REQUIRED, assert_same_bits, each_backend

needs_kernel = pytest.mark.skipif(not BUILT and not REQUIRED, reason="the compiled safety kernel is not built")


def plant(interlocks: bool = True) -> Settings:
    """o0: range, staleness, hard/soft/rate limits; o1: hard/soft and frozen-value check;
    o2: nothing; an e-stop input; a0 rate-limited, a1 not; two interlocks (or none)."""
    def tag(name: str, **kw: Any) -> dict[str, Any]:
        return {"connection": "plc", "node": f"ns=2;s={name}", **kw}

    s = Settings(
        gateway={"cycle_hz": 100.0},
        connections={"plc": {"type": "opcua", "url": "opc.tcp://127.0.0.1:4840"}},
        tags={"hb": tag("hb", datatype="uint32", writable=True), "o0": tag("o0", range=[-10.0, 10.0], stale_ms=100),
              "o1": tag("o1", freeze_s=0.5), "o2": tag("o2"), "estop": tag("estop", datatype="bool"),
              "a0": tag("a0", writable=True), "a1": tag("a1", writable=True)},
        policy={"path": "policy.onnx", "observations": ["o0", "o1", "o2"], "actions": ["a0", "a1"]},
        safety={"heartbeat_tag": "hb", "estop_input": "estop",
                "limits": {"o0": {"hard": [-5.0, 5.0], "soft": [-2.0, 2.0], "max_rate": 100.0},
                           "o1": {"hard": [0.0, 50.0], "soft": [10.0, 40.0]}},
                "actions": {"a0": {"min": 0.0, "max": 10.0, "max_rate": 5.0, "safe": 0.0},
                            "a1": {"min": -1.0, "max": 1.0, "safe": 0.0}},
                "interlocks": {"il0": {"when": "o0 >= 1 and o1 < 20", "then": "a0 <= 5"},
                               "il1": {"when": "o2 > 3", "then": "a1 >= 0"}} if interlocks else {}},
    )
    assert not cross_problems(s)
    return s


class Rig:
    """A checker on the plant, fed one snapshot a cycle (10 ms apart, each tag received now
    unless ``silent``)."""

    HEALTHY = {"o0": 0.0, "o1": 20.0, "o2": 0.0, "estop": 0.0}

    def __init__(self, backend: str) -> None:
        self.s = plant()
        self.tags = TagMap.from_settings(self.s)
        self.checker = ObservationChecker(self.s, self.tags, backend)
        self.snap = Snapshot(len(self.tags.readable))
        self.snap.values[:] = 0.0
        self.snap.quality[:] = Quality.GOOD
        self.now = 1000.0

    def step(self, dt: float = 0.01, silent: tuple[str, ...] = (), quality: dict[str, Quality] | None = None,
             **values: float) -> Verdict:
        self.now += dt
        for name, x in {**self.HEALTHY, **values}.items():
            i = self.tags.index[name]
            self.snap.values[i] = x
            self.snap.quality[i] = (quality or {}).get(name, Quality.GOOD)
            if name not in silent:
                self.snap.recv_mono[i] = self.now
        return self.checker.check(self.snap, self.now)


# ---- choosing the backend ------------------------------------------------------------
def test_the_kernel_is_built_and_used_where_required() -> None:
    """CI sets EDGEWARDEN_REQUIRE_SAFETY_KERNEL=1 (the README's test command): there the
    install must have built the kernel, and the gateway must be running it by default."""
    if not REQUIRED:
        pytest.skip("EDGEWARDEN_REQUIRE_SAFETY_KERNEL is not set")
    assert backends.kernel_module() is not None, "pip install did not build edgewarden/gateway/safety/_kernel.c"
    s = plant()
    checker = ObservationChecker(s, TagMap.from_settings(s))
    used = {checker.backend, Interlocks(s, checker.names).backend, ActionShield(s).backend}
    assert used == {"c"}, used


def test_the_environment_forces_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(backends.ENV, "numpy")
    s = plant()
    checker = ObservationChecker(s, TagMap.from_settings(s))
    assert {checker.backend, Interlocks(s, checker.names).backend, ActionShield(s).backend} == {"numpy"}
    monkeypatch.setenv(backends.ENV, "fortran")
    with pytest.raises(ConfigError, match="EDGEWARDEN_SAFETY_KERNEL='fortran'"):
        ActionShield(s)


def test_requiring_a_missing_kernel_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "kernel_module", lambda: None)
    s = plant()
    assert ActionShield(s).backend == "numpy"  # auto: the fallback
    monkeypatch.setenv(backends.ENV, "c")
    with pytest.raises(ConfigError, match="not built"):
        ActionShield(s)


# ---- the checker's rules, one by one ----------------------------------------------------
RULES = [
    # (what, cycle arguments, status, code)
    ("healthy", {}, Status.OK, "ok"),
    ("no data", {"quality": {"o1": Quality.NO_DATA}}, Status.HOLD, "no_data:o1"),
    ("bad quality", {"quality": {"o2": Quality.BAD}}, Status.TRIP, "bad_quality:o2"),
    ("first offender wins", {"quality": {"o0": Quality.UNCERTAIN, "o1": Quality.NO_DATA}}, Status.TRIP,
     "bad_quality:o0"),
    ("quality before value", {"quality": {"o2": Quality.NO_DATA}, "o0": math.nan}, Status.HOLD, "no_data:o2"),
    ("NaN", {"o1": math.nan}, Status.TRIP, "bad_value:o1"),
    ("+inf without a range", {"o2": math.inf}, Status.TRIP, "bad_value:o2"),
    ("-inf", {"o0": -math.inf}, Status.TRIP, "bad_value:o0"),
    ("outside the valid range", {"o0": 10.5}, Status.TRIP, "bad_value:o0"),
    ("stale", {"dt": 0.2, "silent": ("o0",)}, Status.HOLD, "stale:o0"),
    ("steady but fresh", {"dt": 0.2}, Status.OK, "ok"),
    ("frozen", {"dt": 0.6}, Status.HOLD, "frozen:o1"),
    ("stale before frozen", {"dt": 0.6, "silent": ("o0",)}, Status.HOLD, "stale:o0"),
    ("rate of change", {"o0": 1.5}, Status.TRIP, "rate_of_change:o0"),
    ("dt = 0: no rate check", {"dt": 0.0, "o0": 1.5}, Status.OK, "ok"),
    ("PLC e-stop", {"estop": 1.0}, Status.TRIP, "plc_estop"),
    ("hard high", {"o1": 60.0}, Status.TRIP, "hard_limit:o1:high"),
    ("hard low", {"o1": -1.0}, Status.TRIP, "hard_limit:o1:low"),
    ("soft", {"o1": 45.0}, Status.OK, "soft_limit:o1"),
]


@each_backend
@pytest.mark.parametrize(("what", "cycle", "status", "code"), RULES, ids=[r[0] for r in RULES])
def test_every_rule(backend: str, what: str, cycle: dict[str, Any], status: Status, code: str) -> None:
    rig = Rig(backend)
    assert rig.step().code == "ok"
    verdict = rig.step(**cycle)
    assert (verdict.status, verdict.code) == (status, code), what
    assert verdict.soft_alarms == int(code.startswith("soft"))
    tag = code.split(":")[1] if ":" in code else "estop"
    assert verdict.message == "" if status == Status.OK else repr(tag) in verdict.message


@needs_kernel
def test_backends_agree_on_messages_and_state() -> None:
    """Cycle after cycle through every rule: the same verdicts, messages and history
    (frozen-value bookkeeping before any return; the previous reading only past the range
    rules), to the bit."""
    rigs = [Rig("c"), Rig("numpy")]
    script = [{}, *(cycle for _, cycle, _, _ in RULES), {"dt": 0.0}, {}, {"o0": 0.9}, {"dt": -1.0, "o0": 0.0}, {}]
    for k, cycle in enumerate(script * 2):
        kernel, fallback = (rig.step(**cycle) for rig in rigs)
        assert kernel == fallback, (k, cycle)
        assert_same_bits(rigs[0].checker, rigs[1].checker, CHECKER_STATE, (k, cycle))


@each_backend
def test_a_reload_carries_the_history_into_the_new_checker(backend: str) -> None:
    """The history a rebuilt checker takes over (ControlLoop.apply_settings) is the one the kernel reads."""
    def reloaded() -> Rig:
        rig = Rig(backend)
        rig.step()
        old, rig.checker = rig.checker, ObservationChecker(rig.s, rig.tags, backend)
        rig.checker.take_history(old)
        return rig

    assert reloaded().step(o0=1.5).code == "rate_of_change:o0"  # against the old previous reading
    assert reloaded().step(dt=0.6).code == "frozen:o1"  # unchanged since before the reload


# ---- interlocks and shield ------------------------------------------------------------
@each_backend
def test_interlocks_tighten_and_release(backend: str) -> None:
    s = plant()
    interlocks = Interlocks(s, ObservationChecker(s, TagMap.from_settings(s), backend).names, backend)
    monitored = np.array([0.0, 20.0, 0.0, 0.0])  # o0, o1, o2, estop
    assert [x.tolist() for x in interlocks.bounds(monitored)] == [[0.0, -1.0], [10.0, 1.0]]
    monitored[:3] = [1.0, 19.0, 3.5]
    assert [x.tolist() for x in interlocks.bounds(monitored)] == [[0.0, 0.0], [5.0, 1.0]]
    assert interlocks.active_names() == ["il0", "il1"]
    monitored[0] = math.nan  # NaN never satisfies a clause
    assert [x.tolist() for x in interlocks.bounds(monitored)] == [[0.0, 0.0], [10.0, 1.0]]
    assert interlocks.active_names() == ["il1"]


@each_backend
def test_no_interlocks(backend: str) -> None:
    s = plant(interlocks=False)
    interlocks = Interlocks(s, ["o0", "o1", "o2", "estop"], backend)
    lo, hi = interlocks.bounds(np.array([1.0, 2.0, 3.0, 0.0]))
    assert (lo.tolist(), hi.tolist(), interlocks.active_names()) == ([0.0, -1.0], [10.0, 1.0], [])


SHIELD = [
    # (what, proposed, last, dt, ok, code, out, clipped, rate_limited)
    ("inside", [1.0, 0.5], [1.0, 0.0], 0.1, True, "ok", [1.0, 0.5], 0, 0),
    ("clipped", [12.0, -3.0], [10.0, 0.0], 0.1, True, "clipped", [10.0, -1.0], 2, 0),
    ("rate-limited", [9.0, 1.0], [1.0, -1.0], 0.1, True, "rate_limited", [1.5, 1.0], 0, 1),
    ("dt = 0 holds a rate-limited action", [9.0, 1.0], [1.0, -1.0], 0.0, True, "rate_limited", [1.0, 1.0], 0, 1),
    ("NaN", [1.0, math.nan], [1.0, 0.0], 0.1, False, "nonfinite_action:a1", None, 0, 0),
    ("-inf before a conflict", [1.0, -math.inf], [50.0, 0.0], 0.1, False, "nonfinite_action:a1", None, 0, 0),
    ("last far outside the bounds", [1.0, 0.0], [50.0, 0.0], 0.1, False, "interlock_conflict:a0", None, 0, 0),
    ("no rate limit, however far the last value", [1.0, 0.0], [1.0, 1e308], 0.0, True, "ok", [1.0, 0.0], 0, 0),
]


@each_backend
@pytest.mark.parametrize(("what", "proposed", "last", "dt", "ok", "code", "out", "clipped", "rate_limited"),
                         SHIELD, ids=[c[0] for c in SHIELD])
def test_shield_cases(backend: str, what: str, proposed: list[float], last: list[float], dt: float, ok: bool,
                      code: str, out: list[float] | None, clipped: int, rate_limited: int) -> None:
    shield = ActionShield(plant(), backend)
    buf = np.full(2, -7.0)
    res = shield.apply(np.array(proposed), np.array(last), dt, buf)
    assert (res.ok, res.code, res.clipped, res.rate_limited) == (ok, code, clipped, rate_limited), what
    assert buf.tolist() == (out if ok else [-7.0, -7.0])  # refused: nothing written
    changed = [int(y != x) for y, x in zip(out, proposed)] if out is not None else [0, 0]
    assert shield.interventions.tolist() == changed


# ---- the kernel's own guards ----------------------------------------------------------
def kernel() -> Any:
    module = backends.kernel_module()
    if module is None:
        if REQUIRED:
            pytest.fail("the compiled safety kernel is not built")
        pytest.skip("the compiled safety kernel is not built")
    return module


def shield_arrays(n: int = 3) -> dict[str, np.ndarray]:
    return {"rate": np.ones(n), "interventions": np.zeros(n, dtype=np.int64), "low": np.zeros(n),
            "high": np.zeros(n)}


def test_zero_actions() -> None:
    k = kernel()
    e = np.zeros(0)
    assert k.Shield(**shield_arrays(0)).apply(e, e, 0.1, e, e, e) == 0
    bounds = {"base_lo": e, "base_hi": e, "lo": e, "hi": e, "active": np.zeros(0, bool),
              "action": np.zeros(0, np.intp), "upper": np.zeros(0, bool), "limit": e,
              "clause_slot": np.zeros(0, np.intp), "clause_op": np.zeros(0, np.uint8), "clause_value": e,
              "clause_owner": np.zeros(0, np.intp)}
    assert k.Interlocks(**bounds).bounds(e) is None


@pytest.mark.parametrize(("change", "error", "message"), [
    ({"rate": np.ones(3, dtype=np.float32)}, TypeError, "rate must be a 1-D float64 array"),
    ({"rate": [1.0, 1.0, 1.0]}, TypeError, "rate must be a 1-D C-contiguous float64 array, got list"),
    ({"rate": np.ones(6)[::2]}, TypeError, "rate must be a 1-D C-contiguous"),
    ({"rate": np.ones((3, 1))}, TypeError, "got 2-D"),
    ({"interventions": np.zeros(3)}, TypeError, "interventions must be a 1-D int64 array"),
    ({"low": np.zeros(2)}, ValueError, "low must have 3 elements, got 2"),
    ({"high": np.zeros(3).view()}, None, None),
    ({"high": np.frombuffer(bytes(24))}, TypeError, "high must be a 1-D C-contiguous writable float64 array"),
    ({"extra": np.zeros(3)}, TypeError, "takes exactly 4 keyword arguments"),
])
def test_the_kernel_refuses_arrays_it_cannot_use(change: dict[str, Any], error: type[Exception] | None,
                                                 message: str | None) -> None:
    k = kernel()
    arrays = {**shield_arrays(), **change}
    if error is None:
        k.Shield(**arrays)
        return
    with pytest.raises(error, match=message):
        k.Shield(**arrays)


def test_the_kernel_refuses_bad_indices_and_per_call_arrays() -> None:
    k = kernel()
    s = plant()
    tags = TagMap.from_settings(s)
    checker = ObservationChecker(s, tags, "c")
    shield = ActionShield(s, "c")
    interlocks = Interlocks(s, checker.names, "c")
    snap = Snapshot(len(tags.readable))
    with pytest.raises(TypeError, match="snapshot values must be a 1-D float64 array"):
        checker._run(snap.values.astype(np.float32), snap.quality, snap.recv_mono, 1.0)
    with pytest.raises(TypeError, match="snapshot quality must be a 1-D uint8 array"):
        checker._run(snap.values, snap.recv_mono, snap.recv_mono, 1.0)
    with pytest.raises(IndexError):
        checker._run(np.zeros(0), np.zeros(0, np.uint8), np.zeros(0), 1.0)
    with pytest.raises(IndexError, match="interlocks read monitored value 2 of 2"):
        interlocks.bounds(np.zeros(2))
    with pytest.raises(ValueError, match="proposed must have 2 elements, got 3"):
        shield.apply(np.zeros(3), np.zeros(2), 0.1, np.zeros(2))
    readonly = np.zeros(2)
    readonly.flags.writeable = False
    with pytest.raises(TypeError, match="out must be a 1-D C-contiguous writable float64 array"):
        shield.apply(np.zeros(2), np.zeros(2), 0.1, readonly)
    with pytest.raises(TypeError):
        shield.apply(np.zeros(2), np.zeros(2), "0.1", np.zeros(2))
    f = np.zeros(2)
    with pytest.raises(ValueError, match="estop_index 2 outside"):
        k.Checker(**{name: f for name in ("range_lo", "range_hi", "hard_lo", "hard_hi", "soft_lo", "soft_hi",
                                          "stale_s", "freeze_s", "max_rate", "values", "recv_mono", "last_value",
                                          "last_change",
                                          "prev_v", "rate", "state")},
                  slots=np.zeros(2, np.intp), quality=np.zeros(2, np.uint8), estop_index=2)
    one = np.zeros(1)
    il = {"base_lo": one, "base_hi": one, "lo": np.zeros(1), "hi": np.zeros(1), "active": np.zeros(1, bool),
          "action": np.zeros(1, np.intp), "upper": np.ones(1, bool), "limit": one,
          "clause_slot": np.zeros(1, np.intp), "clause_op": np.zeros(1, np.uint8), "clause_value": one,
          "clause_owner": np.zeros(1, np.intp)}
    for key, bad, message in [("action", np.ones(1, np.intp), r"action\[0\] = 1 is outside \[0, 1\)"),
                              ("clause_owner", np.full(1, 5, np.intp), "clause_owner"),
                              ("clause_slot", np.full(1, -1, np.intp), "clause_slot"),
                              ("clause_op", np.full(1, 4, np.uint8), "clause_op")]:
        with pytest.raises(ValueError, match=message):
            k.Interlocks(**{**il, key: bad})
