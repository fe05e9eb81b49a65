"""Observation checks, compiled once from the config into arrays.

For every monitored tag (policy inputs, limited tags, the PLC e-stop and hand/auto
inputs, interlock and fallback-PID inputs) each cycle: quality, valid range (bad data,
NaN included), freshness (no sample received from the link for ``stale_ms``, by default
``max_data_age_ms``: the gateway's own clock, never the PLC's SourceTimestamp, which a
server may advance only when the value changes), frozen value (optional ``freeze_s``:
the value has not changed at all for that long), rate of change (faster than physically
plausible: trip), hard limits (trip) and soft limits (alarm). The verdict says OK, HOLD
(data not usable this cycle: write nothing new) or TRIP, with a reason code naming the
tag and the rule.

The arithmetic runs in the compiled kernel (edgewarden/gateway/safety/_kernel.c) or, where it was
not built, in the numpy code below (edgewarden/gateway/safety/backend.py chooses); both work on
the same pre-allocated arrays and return ``rule + 16 * index`` of the first offender (0:
nothing to say), and reason strings are built here only when something is wrong.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

from edgewarden.gateway.config import Settings
from edgewarden.gateway.io.tags import Quality, Snapshot, TagMap
from edgewarden.gateway.safety import backend as backends


class Status(enum.IntEnum):
    OK = 0
    HOLD = 1
    TRIP = 2


_OK = Status.OK
# rule codes shared with _kernel.c; a result is rule + 16 * index of the first offending tag
_QUALITY, _BAD_VALUE, _STALE, _FROZEN, _RATE, _ESTOP, _HARD, _SOFT = range(1, 9)


@dataclass
class Verdict:
    """Result of one check, reused every cycle."""

    status: Status = Status.OK
    code: str = "ok"
    message: str = ""
    soft_alarms: int = 0

    def set(self, status: Status, code: str, message: str) -> None:
        self.status, self.code, self.message = status, code, message


def monitored_tags(s: Settings) -> list[str]:
    """Every tag the safety layer must see GOOD each cycle (the PLC's authority flags too)."""
    from edgewarden.gateway.safety.expr import parse_condition

    names = [*s.policy.observations, *s.safety.limits]
    names += [t for t in (s.safety.estop_input, s.safety.hand_auto_tag, s.safety.plc_remote_tag,
                          s.safety.plc_watchdog_tag) if t]
    for il in s.safety.interlocks.values():
        names += [c.tag for c in parse_condition(il.when)]
    for pid in s.safety.fallback.pid.values():
        names.append(pid.pv)
        if isinstance(pid.setpoint, str):
            names.append(pid.setpoint)
    return names


_MAX = float(np.finfo(np.float64).max)


def _bounds(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full(n, -np.inf), np.full(n, np.inf)


class ObservationChecker:
    def __init__(self, settings: Settings, tags: TagMap, backend: str | None = None) -> None:
        s = settings
        names: list[str] = list(dict.fromkeys(monitored_tags(s)))
        self.names = names
        self.slots = tags.indices(names)
        n = len(names)
        # ±inf is never a valid reading: without a configured range the valid range is the
        # finite doubles, so the same two comparisons reject NaN and ±inf alike
        # rows: valid range, hard limits, soft limits — one comparison pass per cycle covers all
        self._lo3 = np.vstack([np.full(n, -_MAX), *(_bounds(n)[0] for _ in range(2))])
        self._hi3 = np.vstack([np.full(n, _MAX), *(_bounds(n)[1] for _ in range(2))])
        self.range_lo, self.hard_lo, self.soft_lo = self._lo3
        self.range_hi, self.hard_hi, self.soft_hi = self._hi3
        self.stale_s = np.full(n, s.gateway.data_age_limit_ms / 1000.0)
        self.freeze_s = np.full(n, np.inf)
        self.max_rate = np.full(n, np.inf)
        for i, name in enumerate(names):
            spec = tags.specs[name]
            if spec.range is not None:
                self.range_lo[i], self.range_hi[i] = spec.range
            if spec.stale_ms is not None:
                self.stale_s[i] = spec.stale_ms / 1000.0
            if spec.freeze_s is not None:
                self.freeze_s[i] = spec.freeze_s
            lim = s.safety.limits.get(name)
            if lim is not None and lim.hard is not None:
                self.hard_lo[i], self.hard_hi[i] = lim.hard
            if lim is not None and lim.soft is not None:
                self.soft_lo[i], self.soft_hi[i] = lim.soft
            if lim is not None and lim.max_rate is not None:
                self.max_rate[i] = lim.max_rate
        self.estop_index = names.index(s.safety.estop_input) if s.safety.estop_input else -1
        # the values are taken three times over (one row per range rule) so the numpy
        # comparisons run on same-shape arrays; broadcasting a row costs more than the copy
        self._slots3 = np.tile(self.slots, 3)
        self._v3 = np.zeros((3, n))
        self._v3_flat = self._v3.reshape(-1)
        self._v = self._v3[0]
        self._q = np.zeros(n, dtype=np.uint8)
        self._ts = np.zeros(n)
        self._stamp = np.full(n, np.nan)    # last value seen per tag (frozen-value check)
        self._changed = np.zeros(n)         # gateway time it last changed
        self._prev = np.full(n, np.nan)     # previous good reading (rate of change)
        self._state = np.full(2, np.nan)    # [time of the previous good reading, dt of the last rate check]
        self._rate = np.zeros(n)
        self._lim = np.zeros(n)
        self._age = np.zeros(n)
        self._ok3 = np.zeros((3, n), dtype=bool)
        self._tmp3 = np.zeros((3, n), dtype=bool)
        self._tmp = np.zeros(n, dtype=bool)
        self.verdict = Verdict()
        kernel = backends.choose(backend)
        self.backend = backends.name(kernel)
        self._run = self._check_numpy if kernel is None else kernel.Checker(
            range_lo=self.range_lo, range_hi=self.range_hi, hard_lo=self.hard_lo, hard_hi=self.hard_hi,
            soft_lo=self.soft_lo, soft_hi=self.soft_hi, stale_s=self.stale_s, freeze_s=self.freeze_s,
            max_rate=self.max_rate, slots=self.slots, values=self._v, quality=self._q, recv_mono=self._ts,
            last_value=self._stamp,
            last_change=self._changed, prev_v=self._prev, rate=self._rate, state=self._state,
            estop_index=self.estop_index).check

    def take_history(self, old: ObservationChecker) -> None:
        """Carry the run-time history (last values, when each changed, the previous good
        reading and its time) of the checker this one replaces on a reload. The monitored
        tags must be the same (the reload refuses a change to them); copies into the arrays
        the kernel holds, never replaces them."""
        if old.names != self.names:
            raise ValueError("a checker takes history only from one monitoring the same tags")
        np.copyto(self._stamp, old._stamp)
        np.copyto(self._changed, old._changed)
        np.copyto(self._prev, old._prev)
        self._state[0] = old._state[0]

    @property
    def values(self) -> np.ndarray:
        """This cycle's values of the monitored tags, in ``names`` order (valid after check)."""
        return self._v

    def data_age(self, now_mono: float) -> float:
        """Age (s) of the oldest monitored value the last check saw, by its receive time;
        NaN when none was received."""
        oldest = self._ts.min()
        return now_mono - oldest if oldest == oldest else math.nan

    def check(self, snap: Snapshot, now_mono: float) -> Verdict:
        r = self._run(snap.values, snap.quality, snap.recv_mono, now_mono)
        if r:
            return self._report(r & 15, r >> 4)
        verdict = self.verdict
        verdict.status, verdict.code, verdict.message = _OK, "ok", ""
        return verdict

    def _report(self, rule: int, i: int) -> Verdict:
        """The verdict for the first offender ``i`` of ``rule``, with its reason."""
        verdict, name, v = self.verdict, self.names[i], self._v
        if rule == _QUALITY:
            # a value that is not GOOD is never judged on its number
            quality = Quality(int(self._q[i]))
            if quality == Quality.NO_DATA:
                verdict.set(Status.HOLD, f"no_data:{name}", f"no data for tag {name!r}")
            else:
                verdict.set(Status.TRIP, f"bad_quality:{name}", f"tag {name!r} reports {quality.name} quality")
        elif rule == _BAD_VALUE:
            verdict.set(Status.TRIP, f"bad_value:{name}",
                        f"tag {name!r} read {v[i]!r}, outside its valid range "
                        f"[{self.range_lo[i]}, {self.range_hi[i]}]")
        elif rule == _STALE:
            verdict.set(Status.HOLD, f"stale:{name}",
                        f"no fresh sample of tag {name!r} from the link within {self.stale_s[i] * 1000:.0f} ms")
        elif rule == _FROZEN:
            verdict.set(Status.HOLD, f"frozen:{name}",
                        f"tag {name!r} has not changed for {self.freeze_s[i]:g} s (frozen sensor?)")
        elif rule == _RATE:
            verdict.set(Status.TRIP, f"rate_of_change:{name}",
                        f"tag {name!r} changed at {self._rate[i] / self._state[1]:.6g} per second, faster "
                        f"than its limit {self.max_rate[i]:.6g}")
        elif rule == _ESTOP:
            verdict.set(Status.TRIP, "plc_estop", f"PLC e-stop input {name!r} is active")
        elif rule == _HARD:
            side = "high" if v[i] > self.hard_hi[i] else "low"
            bound = self.hard_hi[i] if side == "high" else self.hard_lo[i]
            verdict.set(Status.TRIP, f"hard_limit:{name}:{side}",
                        f"tag {name!r} = {v[i]:.6g} beyond its hard {side} limit {bound:.6g}")
        else:
            verdict.set(_OK, f"soft_limit:{name}", "")
            verdict.soft_alarms += 1
        return verdict

    # ---- the numpy fallback: a handful of numpy calls on the pre-allocated buffers --------
    def _first_outside(self, row: int) -> int:
        """Index of the first value outside row ``row`` of the bounds (NaN is outside), or -1."""
        bad = ~self._ok3[row]
        return int(np.flatnonzero(bad)[0]) if np.count_nonzero(bad) else -1

    def _check_numpy(self, values: np.ndarray, quality: np.ndarray, recv_mono: np.ndarray,
                     now_mono: float) -> int:
        v, q, tmp = self._v, self._q, self._tmp
        # ndarray.take (the method) costs a fraction of np.take's dispatch
        values.take(self._slots3, out=self._v3_flat, mode="clip")
        quality.take(self.slots, out=q, mode="clip")
        recv_mono.take(self.slots, out=self._ts, mode="clip")

        # Frozen-value bookkeeping: when did each value last change (NaN always "changes")?
        np.not_equal(v, self._stamp, out=tmp)
        np.copyto(self._changed, now_mono, where=tmp)
        np.copyto(self._stamp, v, where=tmp)
        # One pass over the three range rules (valid range, hard, soft); the comparisons are
        # false for NaN, so NaN is outside every row. Judged below, in the rules' order.
        ok3 = self._ok3
        np.greater_equal(self._v3, self._lo3, out=ok3)
        np.less_equal(self._v3, self._hi3, out=self._tmp3)
        ok3 &= self._tmp3
        all_inside = np.count_nonzero(ok3) == ok3.size

        # Quality first: a value that is not GOOD is never judged on its number.
        if np.count_nonzero(q):
            return _QUALITY + 16 * int(np.flatnonzero(q)[0])
        # Valid range (bad data): NaN and ±inf lie outside every range.
        i = -1 if all_inside else self._first_outside(0)
        if i >= 0:
            return _BAD_VALUE + 16 * i
        # Fresh: a sample received within stale_s (NaN: never received, judged by quality)
        np.subtract(now_mono, self._ts, out=self._age)
        np.greater(self._age, self.stale_s, out=tmp)
        if np.count_nonzero(tmp):
            return _STALE + 16 * int(np.flatnonzero(tmp)[0])
        np.subtract(now_mono, self._changed, out=self._age)
        np.greater(self._age, self.freeze_s, out=tmp)
        if np.count_nonzero(tmp):
            return _FROZEN + 16 * int(np.flatnonzero(tmp)[0])
        # Rate of change against the previous good reading (NaN before there is one: passes).
        state = self._state
        dt = now_mono - state.item(0)
        np.subtract(v, self._prev, out=self._rate)
        np.abs(self._rate, out=self._rate)
        np.copyto(self._prev, v)
        state[0], state[1] = now_mono, dt
        if dt > 0:
            np.multiply(self.max_rate, dt, out=self._lim)
            np.greater(self._rate, self._lim, out=tmp)
        if dt > 0 and np.count_nonzero(tmp):
            return _RATE + 16 * int(np.flatnonzero(tmp)[0])
        if self.estop_index >= 0 and v[self.estop_index] != 0.0:
            return _ESTOP + 16 * self.estop_index
        if all_inside:
            return 0
        i = self._first_outside(1)
        if i >= 0:
            return _HARD + 16 * i
        return _SOFT + 16 * self._first_outside(2)
