"""``[policy] watch``: a changed model file is validated and staged like ``model load``;
a refused one is logged and the running model stays."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgewarden.gateway.app import load_policy
from edgewarden.gateway.config import load_config
from edgewarden.gateway.policy.registry import ModelManager
from tests.helpers import wait_for, write_config, write_linear_policy


class Recorder:
    def __init__(self) -> None:
        self.records: list[tuple[str, dict]] = []
        self.errors: list[tuple[str, dict[str, Any]]] = []

    def append(self, kind: str, payload: dict) -> int:
        self.records.append((kind, payload))
        return len(self.records)

    def error(self, event: str, **kw: Any) -> None:
        self.errors.append((event, kw))


@pytest.mark.anyio
async def test_a_dropped_file_is_staged_and_a_bad_one_refused(tmp_path: Path) -> None:
    path = write_linear_policy(tmp_path / "policy.onnx")
    s = load_config(write_config(tmp_path, policy=path)).settings
    log = Recorder()
    models = ModelManager(s, load_policy(s), log)

    stop = asyncio.Event()
    task = asyncio.create_task(models.watch_file(path, None, stop, log=log))
    await asyncio.sleep(0.2)
    new = write_linear_policy(tmp_path / "new.onnx", bias=np.array([10.0, 5.0]))
    shutil.copyfile(new, path)
    staged = await wait_for(lambda: models.staged, "the dropped model to be staged", timeout=5.0)
    assert staged.sha256 != models.active.sha256 and models.staged_reason == "load by file drop"
    models.staged = None
    path.write_bytes(b"not a model")
    await wait_for(lambda: log.errors, "the refusal to be logged", timeout=5.0)
    assert models.staged is None and "refused" in log.errors[0][0]
    stop.set()
    await asyncio.wait_for(task, 3.0)


@pytest.mark.anyio
async def test_a_late_cycle_is_no_gap_in_the_shadow_watch_and_a_skipped_one_is(tmp_path: Path) -> None:
    """The transient watch forgets across cycles the shadow did not see (HOLD, MANUAL),
    counted in cycles: a loaded machine's late cycles (3 periods apart here) must not hide
    a setpoint step from it."""
    path = write_linear_policy(tmp_path / "policy.onnx")
    s = load_config(write_config(tmp_path, policy=path)).settings
    models = ModelManager(s, load_policy(s), Recorder())
    dt = 1.0 / s.gateway.cycle_hz
    obs = np.array([350.0, 0.5, 335.0, 350.0])
    lo, hi = np.array([0.0, 0.0]), np.array([200.0, 200.0])

    async def run(cycles: list[int]) -> int:
        await models.start_shadow(path, "test")
        for n in cycles:
            action = np.array([100.0 if n < 40 else 160.0, 100.0])  # a step of 30 % of the span
            models.shadow_step(obs, action, lo, hi, dt, 3.0 * dt * n, n)
        return models.evidence()["transients"]["transients"]

    assert await run(list(range(80))) == 1  # late, but every cycle seen
    assert await run(list(range(30)) + list(range(45, 80))) == 0  # the step fell in unseen cycles
