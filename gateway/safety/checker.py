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
        self.range_lo, self.range_hi = np.full(n, -_MAX), np.full(n, _MAX)
        self.hard_lo, self.hard_hi = _bounds(n)
        self.soft_lo, self.soft_hi = _bounds(n)
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
        self._v = np.zeros(n)
        self._q = np.zeros(n, dtype=np.uint8)
        self._ts = np.zeros(n)
        self._last_ts = np.full(n, np.nan)
        self._last_change = np.zeros(n)
        self._prev_v = np.full(n, np.nan)
        self._prev_t = np.nan
        self._rate = np.zeros(n)
        self._ok = np.zeros(n, dtype=bool)
        self._tmp = np.zeros(n, dtype=bool)
        self.verdict = Verdict()

    @property
    def values(self) -> np.ndarray:
        """This cycle's values of the monitored tags, in ``names`` order (valid after check)."""
        return self._v

    def _first_outside(self, lo: np.ndarray, hi: np.ndarray) -> int:
        """Index of the first monitored value outside [lo, hi] (NaN is outside), or -1."""
        ok, tmp = self._ok, self._tmp
        np.greater_equal(self._v, lo, out=ok)
        np.less_equal(self._v, hi, out=tmp)
        ok &= tmp
        return -1 if ok.all() else int(np.flatnonzero(~ok)[0])

    def check(self, snap: Snapshot, now_mono: float) -> Verdict:
        v, q, tmp = self._v, self._q, self._tmp
        np.take(snap.values, self.slots, out=v)
        np.take(snap.quality, self.slots, out=q)
        np.take(snap.source_ts, self.slots, out=self._ts)
        verdict = self.verdict
        verdict.status, verdict.code, verdict.message = Status.OK, "ok", ""

        # Staleness: has the PLC's timestamp advanced within stale_s of our clock?
        np.not_equal(self._ts, self._last_ts, out=tmp)
        self._last_change[tmp] = now_mono
        self._last_ts[tmp] = self._ts[tmp]

        # Quality first: a value that is not GOOD is never judged on its number.
        if q.any():
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
        i = self._first_outside(self.range_lo, self.range_hi)
        if i >= 0:
            verdict.set(Status.TRIP, f"bad_value:{self.names[i]}",
                        f"tag {self.names[i]!r} read {v[i]!r}, outside its valid range "
                        f"[{self.range_lo[i]}, {self.range_hi[i]}]")
            return verdict
        if (now_mono - self._last_change > self.stale_s).any():
            i = int(np.flatnonzero(now_mono - self._last_change > self.stale_s)[0])
            verdict.set(Status.HOLD, f"stale:{self.names[i]}",
                        f"tag {self.names[i]!r} has not been updated for more than "
                        f"{self.stale_s[i] * 1000:.0f} ms")
            return verdict
        # Rate of change against the previous good reading (NaN before there is one: passes).
        dt = now_mono - self._prev_t
        np.subtract(v, self._prev_v, out=self._rate)
        np.abs(self._rate, out=self._rate)
        self._prev_v[:] = v
        self._prev_t = now_mono
        if dt > 0 and (self._rate > self.max_rate * dt).any():
            i = int(np.flatnonzero(self._rate > self.max_rate * dt)[0])
            verdict.set(Status.TRIP, f"rate_of_change:{self.names[i]}",
                        f"tag {self.names[i]!r} changed at {self._rate[i] / dt:.6g} per second, faster than "
                        f"its limit {self.max_rate[i]:.6g}")
            return verdict
        if self.estop_index >= 0 and v[self.estop_index] != 0.0:
            verdict.set(Status.TRIP, "plc_estop", f"PLC e-stop input {self.names[self.estop_index]!r} is active")
            return verdict
        i = self._first_outside(self.hard_lo, self.hard_hi)
        if i >= 0:
            side = "high" if v[i] > self.hard_hi[i] else "low"
            bound = self.hard_hi[i] if side == "high" else self.hard_lo[i]
            verdict.set(Status.TRIP, f"hard_limit:{self.names[i]}:{side}",
                        f"tag {self.names[i]!r} = {v[i]:.6g} beyond its hard {side} limit {bound:.6g}")
            return verdict
        i = self._first_outside(self.soft_lo, self.soft_hi)
        if i >= 0:
            verdict.soft_alarms += 1
            verdict.code = f"soft_limit:{self.names[i]}"
        return verdict
