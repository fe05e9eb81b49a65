"""Observation checks, compiled once from the config into arrays.

For every monitored tag (policy inputs, limited tags, the PLC e-stop and hand/auto
inputs, interlock and fallback-PID inputs) each cycle: quality, staleness (the source
timestamp has not advanced for ``stale_ms`` of gateway time, so clock offsets between
PLC and gateway do not matter), valid range (bad data, NaN included), rate of change
(faster than physically plausible: trip), hard limits (trip) and soft limits (alarm). The verdict says
OK, HOLD (data not usable this cycle: write nothing new) or TRIP, with a reason code
naming the tag and the rule. The fast path is a handful of numpy calls on pre-allocated
buffers; reason strings are built only when something is wrong.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from gateway.config import Settings
from gateway.io.tags import Quality, Snapshot, TagMap


class Status(enum.IntEnum):
    OK = 0
    HOLD = 1
    TRIP = 2


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
    """Every tag the safety layer must see GOOD each cycle."""
    from gateway.safety.expr import parse_condition

    names = [*s.policy.observations, *s.safety.limits]
    names += [t for t in (s.safety.estop_input, s.safety.hand_auto_tag) if t]
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
    def __init__(self, settings: Settings, tags: TagMap) -> None:
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
        self.stale_s = np.full(n, np.inf)
        self.max_rate = np.full(n, np.inf)
        for i, name in enumerate(names):
            spec = tags.specs[name]
            if spec.range is not None:
                self.range_lo[i], self.range_hi[i] = spec.range
            if spec.stale_ms is not None:
                self.stale_s[i] = spec.stale_ms / 1000.0
            lim = s.safety.limits.get(name)
            if lim is not None and lim.hard is not None:
                self.hard_lo[i], self.hard_hi[i] = lim.hard
            if lim is not None and lim.soft is not None:
                self.soft_lo[i], self.soft_hi[i] = lim.soft
            if lim is not None and lim.max_rate is not None:
                self.max_rate[i] = lim.max_rate
        self.estop_index = names.index(s.safety.estop_input) if s.safety.estop_input else -1
        # the values are taken three times over (one row per range rule) so the comparisons
        # run on same-shape arrays; broadcasting a row costs more than the extra copy
        self._slots3 = np.tile(self.slots, 3)
        self._v3 = np.zeros((3, n))
        self._v3_flat = self._v3.reshape(-1)
        self._v = self._v3[0]
        self._q = np.zeros(n, dtype=np.uint8)
        self._ts = np.zeros(n)
        self._last_ts = np.full(n, np.nan)
        self._last_change = np.zeros(n)
        self._prev_v = np.full(n, np.nan)
        self._prev_t = np.nan
        self._rate = np.zeros(n)
        self._lim = np.zeros(n)
        self._age = np.zeros(n)
        self._ok3 = np.zeros((3, n), dtype=bool)
        self._tmp3 = np.zeros((3, n), dtype=bool)
        self._tmp = np.zeros(n, dtype=bool)
        self.verdict = Verdict()

    @property
    def values(self) -> np.ndarray:
        """This cycle's values of the monitored tags, in ``names`` order (valid after check)."""
        return self._v

    def _first_outside(self, row: int) -> int:
        """Index of the first value outside row ``row`` of the bounds (NaN is outside), or -1."""
        bad = ~self._ok3[row]
        return int(np.flatnonzero(bad)[0]) if np.count_nonzero(bad) else -1

    def check(self, snap: Snapshot, now_mono: float) -> Verdict:
        v, q, tmp = self._v, self._q, self._tmp
        # ndarray.take (the method) costs a fraction of np.take's dispatch
        snap.values.take(self._slots3, out=self._v3_flat, mode="clip")
        snap.quality.take(self.slots, out=q, mode="clip")
        snap.source_ts.take(self.slots, out=self._ts, mode="clip")
        verdict = self.verdict
        verdict.status, verdict.code, verdict.message = Status.OK, "ok", ""

        # Staleness: has the PLC's timestamp advanced within stale_s of our clock?
        np.not_equal(self._ts, self._last_ts, out=tmp)
        np.copyto(self._last_change, now_mono, where=tmp)
        np.copyto(self._last_ts, self._ts, where=tmp)
        # One pass over the three range rules (valid range, hard, soft); the comparisons are
        # false for NaN, so NaN is outside every row. Judged below, in the rules' order.
        ok3 = self._ok3
        np.greater_equal(self._v3, self._lo3, out=ok3)
        np.less_equal(self._v3, self._hi3, out=self._tmp3)
        ok3 &= self._tmp3
        all_inside = np.count_nonzero(ok3) == ok3.size

        # Quality first: a value that is not GOOD is never judged on its number.
        if np.count_nonzero(q):
            i = int(np.flatnonzero(q)[0])
            quality = Quality(int(q[i]))
            if quality == Quality.NO_DATA:
                verdict.set(Status.HOLD, f"no_data:{self.names[i]}", f"no data for tag {self.names[i]!r}")
            else:
                verdict.set(Status.TRIP, f"bad_quality:{self.names[i]}",
                            f"tag {self.names[i]!r} reports {quality.name} quality")
            return verdict
        # Valid range (bad data); the comparisons are false for NaN, so NaN fails here too,
        # and ±inf lies outside every range.
        i = -1 if all_inside else self._first_outside(0)
        if i >= 0:
            verdict.set(Status.TRIP, f"bad_value:{self.names[i]}",
                        f"tag {self.names[i]!r} read {v[i]!r}, outside its valid range "
                        f"[{self.range_lo[i]}, {self.range_hi[i]}]")
            return verdict
        np.subtract(now_mono, self._last_change, out=self._age)
        np.greater(self._age, self.stale_s, out=tmp)
        if np.count_nonzero(tmp):
            i = int(np.flatnonzero(tmp)[0])
            verdict.set(Status.HOLD, f"stale:{self.names[i]}",
                        f"tag {self.names[i]!r} has not been updated for more than "
                        f"{self.stale_s[i] * 1000:.0f} ms")
            return verdict
        # Rate of change against the previous good reading (NaN before there is one: passes).
        dt = now_mono - self._prev_t
        np.subtract(v, self._prev_v, out=self._rate)
        np.abs(self._rate, out=self._rate)
        np.copyto(self._prev_v, v)
        self._prev_t = now_mono
        if dt > 0:
            np.multiply(self.max_rate, dt, out=self._lim)
            np.greater(self._rate, self._lim, out=tmp)
        if dt > 0 and np.count_nonzero(tmp):
            i = int(np.flatnonzero(tmp)[0])
            verdict.set(Status.TRIP, f"rate_of_change:{self.names[i]}",
                        f"tag {self.names[i]!r} changed at {self._rate[i] / dt:.6g} per second, faster than "
                        f"its limit {self.max_rate[i]:.6g}")
            return verdict
        if self.estop_index >= 0 and v[self.estop_index] != 0.0:
            verdict.set(Status.TRIP, "plc_estop", f"PLC e-stop input {self.names[self.estop_index]!r} is active")
            return verdict
        if all_inside:
            return verdict
        i = self._first_outside(1)
        if i >= 0:
            side = "high" if v[i] > self.hard_hi[i] else "low"
            bound = self.hard_hi[i] if side == "high" else self.hard_lo[i]
            verdict.set(Status.TRIP, f"hard_limit:{self.names[i]}:{side}",
                        f"tag {self.names[i]!r} = {v[i]:.6g} beyond its hard {side} limit {bound:.6g}")
            return verdict
        i = self._first_outside(2)
        if i >= 0:
            verdict.soft_alarms += 1
            verdict.code = f"soft_limit:{self.names[i]}"
        return verdict
