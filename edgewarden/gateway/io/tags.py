"""The tag map and the snapshot the control cycle reads into.

Tags are named once in config. At start the map fixes an index per readable tag, so the
cycle works on pre-allocated arrays (values, quality, timestamps) instead of dicts.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from edgewarden.gateway.config import Settings, TagSpec


class Quality(enum.IntEnum):
    """Per-value quality, worst is highest. Only GOOD values may reach the policy."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2
    NO_DATA = 3  # never read, or the connection is down


@dataclass(frozen=True)
class TagMap:
    """Readable tags in a fixed order; writable tags are looked up by name."""

    specs: dict[str, TagSpec]
    readable: tuple[str, ...]
    index: dict[str, int]

    @classmethod
    def from_settings(cls, s: Settings) -> TagMap:
        # Every tag that is not write-only output is read each cycle (actions are read too:
        # the applied value is how MANUAL tracking and verification see the plant).
        readable = tuple(name for name in s.tags if name != s.safety.heartbeat_tag)
        return cls(specs=dict(s.tags), readable=readable, index={n: i for i, n in enumerate(readable)})

    def indices(self, names: list[str] | tuple[str, ...]) -> np.ndarray:
        return np.array([self.index[n] for n in names], dtype=np.intp)


def as_index(slots: np.ndarray) -> slice | np.ndarray:
    """Snapshot slots as a slice where they are contiguous and ascending (cheaper to assign)."""
    if len(slots) and (np.diff(slots) == 1).all():
        return slice(int(slots[0]), int(slots[-1]) + 1)
    return slots


FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class Snapshot:
    """One read of every readable tag, in TagMap order; filled in place every cycle.

    values are engineering units (raw * scale + offset); source_ts is the PLC's timestamp
    (unix seconds, NaN if none); recv_mono is the gateway's monotonic time of the read.
    """

    n: int
    values: np.ndarray = field(init=False)
    quality: np.ndarray = field(init=False)
    source_ts: np.ndarray = field(init=False)
    recv_mono: np.ndarray = field(init=False)
    _abs: np.ndarray = field(init=False, repr=False)
    _big: np.ndarray = field(init=False, repr=False)
    _finite: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.values = np.full(self.n, np.nan)
        self.quality = np.full(self.n, Quality.NO_DATA, dtype=np.uint8)
        self.source_ts = np.full(self.n, np.nan)
        self.recv_mono = np.full(self.n, np.nan)
        self._abs = np.empty(self.n)
        self._big = np.empty(self.n, dtype=bool)
        self._finite = np.empty(self.n, dtype=bool)

    def flag_beyond_float32(self) -> None:
        """A finite value no float32 can hold (a policy's input is float32: it would become
        inf there) is BAD, whatever its status said; NaN and inf are left to the checks'
        bad_value. No allocation: the cycle calls it after every read."""
        np.abs(self.values, out=self._abs)
        np.greater(self._abs, FLOAT32_MAX, out=self._big)
        np.less(self._abs, np.inf, out=self._finite)
        np.logical_and(self._big, self._finite, out=self._big)
        if self._big.any():
            self.quality[self._big] = Quality.BAD

    def mark(self, idx: np.ndarray | slice, quality: Quality) -> None:
        """Mark values bad without presenting the last good value as fresh."""
        self.quality[idx] = quality
        self.values[idx] = np.nan
