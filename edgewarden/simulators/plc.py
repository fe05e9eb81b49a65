"""Plant-generic PLC logic of a twin: one ``scan(now_s)`` per cycle, no network.

A scan, in order (the classic input - logic - output cycle):

1. integrate the plant over the time since the last scan with the outputs held
   (zero-order hold; ``time_scale`` speeds simulated time up), write measurements;
2. heartbeat: a scan that sees ``heartbeat`` differ from the previous scan's value
   marks it changed; it is *fresh* while the last change is at most ``watchdog_ms`` old;
3. ``estop_cmd`` true latches ``estop``;
4. a stale heartbeat that has been seen at least once latches ``watchdog_tripped``
   (before the first change there is nothing to watch: a starting gateway needs no reset);
5. ``reset_cmd`` rising edge: clears ``estop`` if ``estop_cmd`` is false, clears
   ``watchdog_tripped`` if the heartbeat is fresh; the PLC then writes ``reset_cmd``
   back to false (a pulse), so each new true is a new edge;
6. ``remote`` = ``auto`` and not ``estop`` and not ``watchdog_tripped`` and heartbeat fresh;
7. outputs: ``estop`` latched -> safe action; REMOTE -> ``<action>_sp``; MANUAL
   (``auto`` false) -> ``<action>_man`` (defaults to the safe values); otherwise
   (LOCAL in AUTO without a live gateway) -> safe action. Setpoints are clipped to the
   action bounds; a NaN/inf setpoint gives that output's safe value;
8. the plant's own interlocks (``spec.interlocks``) override outputs in every mode, each
   with its hysteresis; ``ilk_<name>`` shows which are active, and ``soft_alarm`` /
   ``hard_alarm`` whether an observation is outside its soft / hard limit band.

The PLC starts in LOCAL with safe outputs.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import numpy as np

from edgewarden.simulators.image import PlcImage, build_tags
from edgewarden.simulators.plants.base import PlantModel

if TYPE_CHECKING:
    from edgewarden.simulators.faults import FaultInjector


class Plc:
    """The scan logic around one plant. ``image`` holds every value by name."""

    def __init__(
        self,
        plant: PlantModel,
        *,
        watchdog_ms: float = 500.0,
        time_scale: float = 1.0,
        image: PlcImage | None = None,
    ) -> None:
        if watchdog_ms <= 0:
            raise ValueError("watchdog_ms must be > 0")
        if time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        self.plant = plant
        self.spec = plant.spec
        self.image = image if image is not None else PlcImage(build_tags(plant.spec))
        self.watchdog_s = watchdog_ms / 1000.0
        self.time_scale = time_scale
        self._actions = self.spec.action_names()
        self._safe = self.spec.safe_action_array
        self._low = self.spec.action_low
        self._high = self.spec.action_high
        self._outputs = self._safe.copy()
        self._obs = self.plant.observe()
        self._obs_idx = {n: i for i, n in enumerate(self.spec.observation_names())}
        self._act_idx = {n: i for i, n in enumerate(self._actions)}
        self._ilk_active = [False] * len(self.spec.interlocks)
        lims = self.spec.objective.limits
        self._lim_idx = np.array([self._obs_idx[lim.name] for lim in lims], dtype=np.intp)
        self._hard = np.array([(lim.hard_low, lim.hard_high) for lim in lims]).reshape(-1, 2)
        self._soft = np.array([lim.soft for lim in lims]).reshape(-1, 2)
        self._last_scan: float | None = None
        self._hb_last: int = int(self.image["heartbeat"])
        self._hb_changed_at: float | None = None  # None: no heartbeat seen yet
        self.scans = 0
        self.faults: FaultInjector | None = None  # sensor faults (edgewarden.simulators.faults)
        self._faulted: set[str] = set()
        self._write_outputs()
        self._write_measurements()

    # ---- the scan ---------------------------------------------------------------------
    def scan(self, now_s: float) -> None:
        img = self.image
        if self._last_scan is not None and now_s > self._last_scan:
            self.plant.step((now_s - self._last_scan) * self.time_scale, self._outputs)
        self._last_scan = now_s if self._last_scan is None else max(now_s, self._last_scan)
        self._write_measurements()

        hb = int(img["heartbeat"])
        if hb != self._hb_last:
            self._hb_last = hb
            self._hb_changed_at = now_s
        fresh = self.heartbeat_fresh(now_s)

        estop = bool(img["estop"]) or bool(img["estop_cmd"])
        tripped = bool(img["watchdog_tripped"]) or (self._hb_changed_at is not None and not fresh)

        if img["reset_cmd"]:
            # A true here is always a rising edge: the PLC clears the pulse once acted on.
            if not img["estop_cmd"]:
                estop = False
            if fresh:
                tripped = False
            img.set("reset_cmd", False)

        remote = bool(img["auto"]) and not estop and not tripped and fresh
        img.set("estop", estop)
        img.set("watchdog_tripped", tripped)
        img.set("remote", remote)

        if estop:
            self._outputs = self._safe.copy()
        elif remote:
            self._outputs = self._setpoints("_sp")
        elif not img["auto"]:
            self._outputs = self._setpoints("_man")
        else:
            self._outputs = self._safe.copy()
        self._interlocks()
        self._write_outputs()
        self.scans += 1

    # ---- helpers and read-outs --------------------------------------------------------
    def heartbeat_fresh(self, now_s: float) -> bool:
        return self._hb_changed_at is not None and now_s - self._hb_changed_at <= self.watchdog_s

    @property
    def outputs(self) -> np.ndarray:
        """The applied action (a copy), in the order of the plant's actions."""
        return self._outputs.copy()

    @property
    def mode(self) -> str:
        """ESTOP, REMOTE, MANUAL or LOCAL (for logs and tests; not served)."""
        img = self.image
        if img["estop"]:
            return "ESTOP"
        if img["remote"]:
            return "REMOTE"
        return "MANUAL" if not img["auto"] else "LOCAL"

    def _setpoints(self, suffix: str) -> np.ndarray:
        out = np.empty_like(self._safe)
        for i, name in enumerate(self._actions):
            v = float(self.image[name + suffix])
            out[i] = self._safe[i] if not math.isfinite(v) else min(max(v, self._low[i]),
                                                                    self._high[i])
        return out

    def _interlocks(self) -> None:
        selected = self._outputs.copy()
        forced = self._outputs
        for k, ilk in enumerate(self.spec.interlocks):
            i = self._obs_idx.get(ilk.signal)
            v = float(self._obs[i] if i is not None else selected[self._act_idx[ilk.signal]])
            held = self._ilk_active[k]
            if ilk.above:  # on above the threshold, held until below threshold - hysteresis
                on = v > ilk.threshold or (held and v > ilk.threshold - ilk.hysteresis)
            else:
                on = v < ilk.threshold or (held and v < ilk.threshold + ilk.hysteresis)
            self._ilk_active[k] = on
            self.image.set(f"ilk_{ilk.name}", on)
            if on:
                for name, value in ilk.forces:
                    forced[self._act_idx[name]] = value
        y = self._obs[self._lim_idx]
        hard = np.any((y < self._hard[:, 0]) | (y > self._hard[:, 1]))
        soft = np.any((y < self._soft[:, 0]) | (y > self._soft[:, 1]))
        self.image.set("hard_alarm", bool(hard))
        self.image.set("soft_alarm", bool(soft))

    def _write_outputs(self) -> None:
        for name, v in zip(self._actions, self._outputs, strict=True):
            self.image.set(name, float(v))

    def _write_measurements(self) -> None:
        self._obs = self.plant.observe()
        inj = self.faults
        if inj is not None and (inj.active or self._faulted):
            # a faulty transmitter: the image (and so the interlocks) sees what it reports
            faulted = inj.sensor_faulted()
            now = time.time()
            for i, sig in enumerate(self.spec.observations):
                if sig.name in faulted:
                    v, q = inj.apply(sig.name, float(self._obs[i]), now)
                    self._obs[i] = v
                    self.image.set_quality(sig.name, q)  # type: ignore[arg-type]
                elif sig.name in self._faulted:
                    self.image.set_quality(sig.name, "good")
            self._faulted = faulted
        for sig, v in zip(self.spec.observations, self._obs, strict=True):
            self.image.set(sig.name, float(v))
