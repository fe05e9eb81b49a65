"""The control cycle against the in-memory transport and a real onnxruntime policy."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import numpy as np
import pytest

from edgewarden.gateway.app import load_policy
from edgewarden.gateway.config import load_config
from edgewarden.gateway.cycle import ControlLoop
from edgewarden.gateway.io.memory import MemoryTransport
from edgewarden.gateway.io.tags import Quality, TagMap
from edgewarden.gateway.modes import Mode, ModeMachine, ModeRefused
from edgewarden.gateway.ops.metrics import Metrics
from tests.helpers import write_config, write_linear_policy

HEALTHY = {"T": 350.0, "CA": 0.5, "Tj": 332.0, "T_sp": 350.0, "plc_estop": 0.0, "plc_auto": 1.0, "plc_remote": 1.0, "plc_watchdog": 0.0,
           "coolant_flow_sp": 100.0, "feed_flow_sp": 100.0, "coolant_flow": 100.0, "feed_flow": 100.0}


class ListAudit:
    def __init__(self) -> None:
        self.records: list[tuple[str, dict]] = []

    def append(self, kind: str, payload: dict) -> int:
        self.records.append((kind, payload))
        return len(self.records)

    append_owned = append


def make_loop(tmp_path: Path, *, weight: np.ndarray | None = None, replace: dict[str, str] | None = None,
              values: dict[str, float] | None = None, transport_cls: type[MemoryTransport] = MemoryTransport,
              bias: np.ndarray | None = None) -> tuple[ControlLoop, MemoryTransport, ListAudit]:
    policy_path = write_linear_policy(tmp_path / "policy.onnx", weight=weight, bias=bias)
    s = load_config(write_config(tmp_path, policy=policy_path, replace=replace)).settings
    tags = TagMap.from_settings(s)
    transport = transport_cls(tags, dict(HEALTHY if values is None else values))
    audit = ListAudit()
    loop = ControlLoop(s, tags, transport, load_policy(s), ModeMachine(), audit, Metrics())
    return loop, transport, audit


async def steps(loop: ControlLoop, n: int) -> None:
    for _ in range(n):
        await loop.step()


async def run_for(loop: ControlLoop, seconds: float, period: float = 0.01) -> None:
    """Cycles every ``period`` for ``seconds`` (writes, and their acknowledgements, go on)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        await loop.step()
        await asyncio.sleep(period)


def action_writes(t: MemoryTransport) -> list[dict[str, float]]:
    return [w for w in t.writes if "coolant_flow_sp" in w]


@pytest.mark.anyio
async def test_start_is_inhibited_until_an_explicit_start(tmp_path: Path) -> None:
    loop, t, _ = make_loop(tmp_path)
    await steps(loop, 3)
    assert loop.modes.mode == Mode.READY
    assert action_writes(t) == []  # heartbeat only
    assert [w["heartbeat"] for w in t.writes] == [1.0, 2.0, 3.0]
    loop.request_start("alice")
    await steps(loop, 2)
    assert loop.modes.mode == Mode.AUTO
    assert len(action_writes(t)) == 2


@pytest.mark.anyio
async def test_actions_are_shielded_rate_limited_and_bumpless(tmp_path: Path) -> None:
    # coolant = 100 + 5 (T - T_sp): T 20 K above setpoint gives 200, the upper bound
    loop, t, audit = make_loop(tmp_path, values={**HEALTHY, "T": 370.0})
    await steps(loop, 1)
    loop.request_start("alice")
    await steps(loop, 20)
    coolant = [w["coolant_flow_sp"] for w in action_writes(t)]
    step_max = 100.0 * loop.period  # max_rate 100 L/min per s
    assert coolant[0] == pytest.approx(100.0 + step_max)  # ramps from the PLC's current setpoint
    assert all(abs(b - a) <= step_max + 1e-9 for a, b in zip(coolant, coolant[1:]))
    assert max(coolant) == 200.0 and all(0.0 <= c <= 200.0 for c in coolant)
    cycles = [p for k, p in audit.records if k == "cycle" and p["mode"] == "AUTO"]
    assert cycles[0]["proposed"][0] == 200.0 and cycles[0]["written"][0] == pytest.approx(100.0 + step_max)


@pytest.mark.anyio
async def test_hard_limit_trips_latches_and_needs_reset_then_start(tmp_path: Path) -> None:
    loop, t, _ = make_loop(tmp_path)
    await steps(loop, 1)
    loop.request_start("alice")
    await steps(loop, 2)
    t.values["T"] = 401.0  # hard high limit 400 K
    await steps(loop, 1)
    assert loop.modes.mode == Mode.ESTOP
    assert loop.estop.last is not None and loop.estop.last.code == "hard_limit:T:high"
    assert action_writes(t)[-1] == {"coolant_flow_sp": 200.0, "feed_flow_sp": 0.0}  # the safe outputs alone
    assert set(t.writes[-1]) == {"heartbeat"}  # then the heartbeat, once they were acknowledged
    with pytest.raises(ModeRefused, match="trip condition is still present"):
        loop.request_reset("alice")
    t.values["T"] = 350.0
    await steps(loop, 3)
    assert loop.modes.mode == Mode.ESTOP  # latched: cleared conditions alone change nothing
    assert all(w["coolant_flow_sp"] == 200.0 for w in action_writes(t)[-3:])
    loop.request_reset("alice")
    n = len(action_writes(t))
    await steps(loop, 3)
    assert loop.modes.mode == Mode.READY  # reset never restarts
    assert len(action_writes(t)) == n
    loop.request_start("alice")
    await steps(loop, 1)
    assert loop.modes.mode == Mode.AUTO


@pytest.mark.parametrize(("tag", "value", "quality", "code"), [
    ("T", math.nan, Quality.GOOD, "bad_value:T"),
    ("CA", 5.0, Quality.GOOD, "bad_value:CA"),  # outside the sensor span [0, 2]
    ("Tj", 320.0, Quality.BAD, "bad_quality:Tj"),
    ("plc_estop", 1.0, Quality.GOOD, "plc_estop"),
])
@pytest.mark.anyio
async def test_bad_plc_values_trip_with_the_tag_named(tmp_path: Path, tag: str, value: float,
                                                      quality: Quality, code: str) -> None:
    loop, t, _ = make_loop(tmp_path)
    await steps(loop, 1)
    loop.request_start("alice")
    await steps(loop, 1)
    t.values[tag] = value
    t.quality[tag] = quality
    await steps(loop, 1)
    assert loop.modes.mode == Mode.ESTOP
    assert loop.estop.last is not None and loop.estop.last.code == code
    assert action_writes(t)[-1]["feed_flow_sp"] == 0.0


@pytest.mark.anyio
async def test_comms_loss_holds_then_trips_after_timeout(tmp_path: Path) -> None:
    loop, t, _ = make_loop(tmp_path, replace={r"^comms_timeout_ms = 1000": "comms_timeout_ms = 50",
                                                   r"^cycle_hz = 10.0": "cycle_hz = 50.0"})
    await steps(loop, 1)
    loop.request_start("alice")
    await steps(loop, 1)
    t.online = False
    await steps(loop, 1)
    assert loop.modes.mode == Mode.AUTO and loop.stats.holds == 1  # nothing new written
    await asyncio.sleep(0.06)
    t.online = True  # comes back only after the timeout: too late, it has tripped by then
    t.values["T"] = 350.0
    t.online = False
    await steps(loop, 1)
    assert loop.modes.mode == Mode.ESTOP and loop.estop.last.code == "comms_loss"


def _nan_policy_loop(tmp_path: Path, replace: dict[str, str] | None = None):
    # Two hidden units overflow float32 to +inf; the next layer subtracts them: inf − inf = NaN.
    from tests.helpers import contract
    from edgewarden.training.onnx_graph import build_mlp_policy, write_model

    hidden = (np.array([[3e38, 0.0, 0.0, 0.0], [3e38, 0.0, 0.0, 0.0]]), np.zeros(2))
    head = (np.array([[1.0, -1.0], [0.0, 0.0]]), np.array([0.0, 100.0]))
    loop, t, audit = make_loop(tmp_path, replace=replace)
    write_model(loop.settings.policy.path, build_mlp_policy(contract(), [hidden, head]))
    loop.policy = load_policy(loop.settings)  # passes the load checks: zeros in, finite out
    return loop, t, audit


@pytest.mark.anyio
async def test_policy_fault_trips_when_configured(tmp_path: Path) -> None:
    loop, t, audit = _nan_policy_loop(tmp_path, {r'^policy_fault = "fallback"': 'policy_fault = "estop"'})
    await steps(loop, 1)
    loop.request_start("alice")
    await steps(loop, 1)
    assert loop.modes.mode == Mode.ESTOP
    assert loop.estop.last is not None and loop.estop.last.code == "policy_fault"
    assert t.writes[-2:] == [{"coolant_flow_sp": 200.0, "feed_flow_sp": 0.0}, {"heartbeat": float(len(t.writes) - 1)}]
    rec = [p for k, p in audit.records if k == "cycle"][-1]  # the safe write was that cycle's output
    assert rec["written"] == [200.0, 0.0] and rec["mode"] == "ESTOP" and rec["proposed"] is None, rec


@pytest.mark.anyio
async def test_policy_fault_hands_control_to_the_pid_fallback(tmp_path: Path) -> None:
    loop, t, audit = _nan_policy_loop(tmp_path)
    t.values["T"] = 352.0  # 2 K above setpoint: the reverse-acting PID asks for more coolant
    await steps(loop, 1)
    loop.request_start("alice")
    await steps(loop, 5)
    assert loop.modes.mode == Mode.FALLBACK and loop.stats.policy_faults == 5
    coolant = [w["coolant_flow_sp"] for w in action_writes(t)]
    assert coolant == sorted(coolant) and coolant[-1] > 100.0  # ramping up, rate-limited
    assert all(b - a <= 10.0 + 1e-9 for a, b in zip(coolant, coolant[1:]))
    modes = [p for k, p in audit.records if k == "cycle"]
    assert modes[-1]["mode"] == "FALLBACK" and modes[-1]["proposed"] is None


@pytest.mark.anyio
async def test_trip_runs_once_and_isolates_failing_handlers(tmp_path: Path) -> None:
    loop, t, _ = make_loop(tmp_path)
    await steps(loop, 1)
    t.fail_writes = True  # the safe write itself fails: recorded as failed, the rest still runs

    async def broken(event) -> None:  # noqa: ANN001
        raise RuntimeError("a handler that fails")

    loop.estop._handlers.insert(1, ("broken", broken))  # noqa: SLF001 (between the safe write and the count)

    async def go() -> tuple[bool, bool]:
        first = await loop.estop.trip("operator_estop", "test", actor="alice")
        second = await loop.estop.trip("operator_estop", "again", actor="bob")
        return first, second

    assert await go() == (True, False)
    assert loop.estop.count == 1 and loop.estop.handler_failures == ["broken: a handler that fails"]
    # the safe write's truth: attempted, and not acknowledged
    assert loop.last_safe_write is not None
    assert loop.last_safe_write["written"] == loop.shield.safe.tolist()
    assert all(a.startswith("not_attempted") or a.startswith("failed") for a in loop.last_safe_write["ack"])
    samples = loop.metrics.registry.get_sample_value("edgewarden_trips_total", {"reason": "operator_estop"})
    assert samples == 1.0


@pytest.mark.anyio
async def test_deadline_overruns_trip(tmp_path: Path) -> None:
    loop, t, _ = make_loop(tmp_path, replace={r"^max_consecutive_overruns = 5": "max_consecutive_overruns = 3"})
    real_step = loop.step

    async def slow_step(_tick: float | None = None) -> None:
        await real_step()
        await asyncio.sleep(loop.period * 1.5)  # every cycle overruns its period

    loop.step = slow_step  # type: ignore[method-assign]

    async def go() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(loop.run(stop))
        for _ in range(200):
            await asyncio.sleep(0.05)
            if loop.modes.mode == Mode.ESTOP:
                break
        stop.set()
        await task

    await go()
    assert loop.modes.mode == Mode.ESTOP and loop.estop.last.code == "deadline_overrun"
    assert loop.stats.deadline_misses >= 3
    # the condition is still present (the last cycle overran): a reset is refused, saying so
    with pytest.raises(ModeRefused, match="still overruns its deadline"):
        loop.request_reset("alice")


@pytest.mark.anyio
async def test_interlock_restricts_the_action_and_repeated_clips_hand_over_to_fallback(tmp_path: Path) -> None:
    # T >= 375 limits the feed to 50; the policy keeps asking for 100 -> clipped every cycle
    loop, t, audit = make_loop(tmp_path, values={**HEALTHY, "T": 376.0, "T_sp": 376.0, "feed_flow": 40.0},
                               replace={r"^max_interventions = 20": "max_interventions = 3"})
    await steps(loop, 1)
    loop.request_start("alice")
    await steps(loop, 2)
    assert loop.modes.mode == Mode.AUTO
    assert all(w["feed_flow_sp"] <= 50.0 for w in action_writes(t))
    assert [p["interlocks"] for k, p in audit.records if k == "cycle"][-1] == ["hot_limits_feed"]
    await steps(loop, 1)
    assert loop.modes.mode == Mode.FALLBACK  # the third clip within the window
    await steps(loop, 3)
    assert all(w["feed_flow_sp"] <= 50.0 for w in action_writes(t))  # the fallback is shielded too


@pytest.mark.anyio
async def test_interlock_that_no_rate_limited_action_can_meet_trips(tmp_path: Path) -> None:
    loop, t, audit = make_loop(tmp_path)
    await steps(loop, 1)
    loop.request_start("alice")
    await steps(loop, 1)
    t.values["T"] = 376.0  # feed must drop from 100 to <= 50 at once; the rate allows 5 per cycle
    await steps(loop, 1)
    assert loop.modes.mode == Mode.ESTOP
    assert loop.estop.last is not None and loop.estop.last.code == "interlock_conflict:feed_flow_sp"
    assert action_writes(t)[-1]["feed_flow_sp"] == 0.0
    # that cycle's record says what went out: the safe outputs, acknowledged, under ESTOP
    rec = [p for k, p in audit.records if k == "cycle"][-1]
    assert rec["written"] == [200.0, 0.0] and rec["mode"] == "ESTOP" and rec["ack"] == ["ok", "ok", "ok"], rec
    assert rec["proposed"] is not None  # what the policy asked for, refused


@pytest.mark.anyio
async def test_out_of_distribution_input_goes_to_fallback_and_agreement_hands_back(tmp_path: Path) -> None:
    from edgewarden.gateway.policy.contract import ObsStats
    from tests.helpers import contract
    from edgewarden.training.onnx_graph import build_linear_policy, write_model

    loop, t, audit = make_loop(tmp_path, replace={r"^agreement_s = 5.0": "agreement_s = 0.0"})
    c = contract()
    stats = ObsStats(min=(340.0, 0.3, 320.0, 340.0), max=(360.0, 0.7, 345.0, 360.0),
                     mean=(350.0, 0.5, 332.0, 350.0), std=(3.0, 0.05, 3.0, 3.0))
    c = type(c)(**{**c.__dict__, "obs_stats": stats})
    weight = np.array([[20.0, 0.0, 0.0, -20.0], [0.0, 0.0, 0.0, 0.0]])  # the PID fallback's P law
    write_model(loop.settings.policy.path, build_linear_policy(c, weight, np.array([100.0, 100.0])))
    loop.policy = load_policy(loop.settings)
    loop.__init__(loop.settings, loop.tags, t, loop.policy, ModeMachine(), audit, loop.metrics)
    await steps(loop, 1)
    loop.request_start("alice")
    await steps(loop, 1)
    t.values["T"] = 364.0  # 4 K beyond the training range (margin 10 % of 20 K = 2 K)
    await steps(loop, 2)
    assert loop.modes.mode == Mode.AUTO and loop.stats.ood_inputs == 2  # counted, below the threshold
    await steps(loop, 1)
    assert loop.modes.mode == Mode.FALLBACK and loop.stats.ood_inputs == 3
    t.values["T"] = 351.0  # back in range: policy and PID agree -> hand back
    await steps(loop, 3)
    assert loop.modes.mode == Mode.AUTO


@pytest.mark.anyio
@pytest.mark.parametrize(("configured_band", "hands_back"), [(False, True), (True, False)])
async def test_after_an_out_of_distribution_hand_over_the_policy_takes_back_control_within_its_band(
        tmp_path: Path, configured_band: bool, hands_back: bool) -> None:
    """The demo's story: a learned policy that does not propose what the PID does (here 30
    L/min more coolant than the PID's P law, beyond agreement_tolerance = 10) handed over on
    an unfamiliar input and never took control back. Now, once the plant is in its support
    again, a policy with full authority takes it back after agreement_s; one held to a
    20 L/min band (band_configured_model) stays in FALLBACK while it proposes 30 away."""
    from edgewarden.gateway.policy.contract import ObsStats
    from edgewarden.training.onnx_graph import build_linear_policy, write_model
    from tests.helpers import contract

    replace = {r"^agreement_s = 5.0": "agreement_s = 0.2"}
    if configured_band:
        replace[r"^\[safety.fallback\]"] = "[safety.authority]\nband_configured_model = true\n\n[safety.fallback]"
    loop, t, audit = make_loop(tmp_path, replace=replace)
    stats = ObsStats(min=(340.0, 0.3, 320.0, 340.0), max=(360.0, 0.7, 345.0, 360.0),
                     mean=(350.0, 0.5, 332.0, 350.0), std=(3.0, 0.05, 3.0, 3.0))
    weight = np.array([[20.0, 0.0, 0.0, -20.0], [0.0, 0.0, 0.0, 0.0]])  # the PID's P law ...
    write_model(loop.settings.policy.path, build_linear_policy(contract().replaced(obs_stats=stats), weight,
                                                                np.array([130.0, 100.0])))  # ... + 30 L/min
    loop.policy = load_policy(loop.settings)
    loop.__init__(loop.settings, loop.tags, t, loop.policy, ModeMachine(), audit, loop.metrics)
    transitions: list = []
    loop.modes.subscribe(transitions.append)
    await steps(loop, 1)
    loop.request_start("alice")
    await steps(loop, 1)
    t.values["T"] = 364.0  # outside the training range: three cycles hand over
    await steps(loop, 3)
    assert loop.modes.mode == Mode.FALLBACK
    t.values["T"] = 351.0  # in its support again
    await run_for(loop, 1.0)
    assert (loop.modes.mode == Mode.AUTO) == hands_back, loop.modes.mode
    if hands_back:
        back = [tr for tr in transitions if tr.target == Mode.AUTO][-1]
        assert "training distribution" in back.reason and "band" in back.reason


def write_unsure_policy(path: Path, threshold: float = 5.0) -> Path:
    """The P law of the test above, with an uncertainty output that grows with |T - 350|:
    two one-layer critic heads, +k and -k times normalised T (obs normalised as T/3 K), so
    the spread is 2k |T - 350| / 3; scale 1 and k = 7.5 put it at 5 |T - 350|: the
    threshold 5 is crossed 1 K from 350 K, well inside the training range (340-360 K)."""
    from edgewarden.gateway.policy.contract import ObsStats, Uncertainty
    from edgewarden.training.onnx_graph import build_mlp_policy, write_model
    from tests.helpers import contract

    stats = ObsStats(min=(340.0, 0.3, 320.0, 340.0), max=(360.0, 0.7, 345.0, 360.0),
                     mean=(350.0, 0.5, 332.0, 350.0), std=(3.0, 0.05, 3.0, 3.0))
    c = contract().replaced(obs_stats=stats, uncertainty=Uncertainty(
        method="critic_disagreement", scale=1.0, threshold=threshold, calibration={"p999": 1.0}))
    mean, inv = np.asarray(stats.mean), 1.0 / np.asarray(stats.std)
    # actor on normalised obs, tanh head: atanh-free check only needs the action in range
    actor = [(np.array([[0.3, 0.0, 0.0, -0.3], [0.0, 0.0, 0.0, 0.0]]), np.zeros(2))]
    q = np.zeros((1, 6))
    q[0, 0] = 7.5
    critics = [[(q, np.zeros(1))], [(-q, np.zeros(1))]]
    write_model(path, build_mlp_policy(c, actor, obs_offset=mean, obs_scale=inv, head="tanh", critics=critics))
    return path


@pytest.mark.anyio
async def test_an_unsure_model_hands_over_inside_its_training_range_and_every_record_says_how_unsure(
        tmp_path: Path) -> None:
    loop, t, audit = make_loop(tmp_path, replace={r"^agreement_s = 5.0": "agreement_s = 0.0"})
    write_unsure_policy(loop.settings.policy.path)
    loop.policy = load_policy(loop.settings)
    seen: list = []
    modes = ModeMachine()
    modes.subscribe(seen.append)
    loop.__init__(loop.settings, loop.tags, t, loop.policy, modes, audit, loop.metrics)
    await steps(loop, 1)
    loop.request_start("alice")
    await steps(loop, 2)
    recs = [p for k, p in audit.records if k == "cycle"]
    assert loop.modes.mode == Mode.AUTO and recs[-1]["unc"] == pytest.approx(0.0, abs=1e-5)
    t.values["T"] = 352.0  # inside the training range (and 0.7 std from the mean): the range guard is silent
    await steps(loop, 2)
    recs = [p for k, p in audit.records if k == "cycle"]
    assert loop.modes.mode == Mode.AUTO and loop.stats.ood_inputs == 2
    assert recs[-1]["unc"] == pytest.approx(10.0, rel=1e-4)  # 5 |352 - 350|, against the threshold 5
    await steps(loop, 1)
    assert loop.modes.mode == Mode.FALLBACK
    assert "uncertainty 10 exceeds its limit 5" in seen[-1].reason, seen[-1]
    t.values["T"] = 350.2  # familiar again (uncertainty 1): policy and PID agree -> hand back
    await steps(loop, 3)
    assert loop.modes.mode == Mode.AUTO


@pytest.mark.anyio
async def test_uncertainty_scale_widens_the_models_threshold(tmp_path: Path) -> None:
    loop, t, audit = make_loop(tmp_path, replace={r"^agreement_s = 5.0": "agreement_s = 5.0\nuncertainty_scale = 3.0"})
    write_unsure_policy(loop.settings.policy.path)
    loop.policy = load_policy(loop.settings)
    loop.__init__(loop.settings, loop.tags, t, loop.policy, ModeMachine(), audit, loop.metrics)
    await steps(loop, 1)
    loop.request_start("alice")
    t.values["T"] = 352.0  # uncertainty 10: above the model's 5, below 3 x 5
    await steps(loop, 5)
    assert loop.modes.mode == Mode.AUTO and loop.stats.ood_inputs == 0


def test_fallback_pid_does_not_wind_up_while_saturated() -> None:
    from edgewarden.gateway.config import load_config
    from edgewarden.gateway.policy.fallback import FallbackController
    from tests.helpers import EXAMPLE

    s = load_config(EXAMPLE).settings
    names = ["T", "T_sp"]
    fb = FallbackController(s, names)
    out, last = np.zeros(2), np.array([100.0, 100.0])
    for _ in range(100):  # 14 K too hot for 10 s: the output saturates at 200
        fb.compute(np.array([364.0, 350.0]), last, 0.1, out)
    assert out[0] == 200.0
    fb.compute(np.array([351.0, 350.0]), last, 0.1, out)
    assert out[0] == pytest.approx(120.0, abs=1.0)  # P part alone: no wound-up integral
    assert out[1] == 100.0  # no PID for the feed: hold


@pytest.mark.anyio
async def test_stale_data_that_lasts_past_the_timeout_trips(tmp_path: Path) -> None:
    loop, t, _ = make_loop(tmp_path, replace={r"^comms_timeout_ms = 1000": "comms_timeout_ms = 50",
                                                   r"^cycle_hz = 10.0": "cycle_hz = 50.0"})
    await steps(loop, 1)
    loop.request_start("alice")
    await steps(loop, 1)
    t.values["T"] = math.nan
    t.quality["T"] = Quality.NO_DATA  # the PLC stops delivering T while the link stays up
    await steps(loop, 1)
    assert loop.modes.mode == Mode.AUTO and loop.stats.holds == 1
    await run_for(loop, 0.06)  # the link answers, T does not
    await steps(loop, 1)
    assert loop.modes.mode == Mode.ESTOP
    assert loop.estop.last is not None and loop.estop.last.code == "hold_timeout:no_data:T"


class SlowAckTransport(MemoryTransport):
    """Records a write when its request is sent; acknowledges it ``ack_s`` later."""

    def __init__(self, *a, ack_s: float = 0.005, **kw) -> None:
        super().__init__(*a, **kw)
        self.ack_s = ack_s
        self.acked = 0

    async def write(self, plan, values, deadline=None) -> None:
        await super().write(plan, values, deadline)  # sent (and recorded) at once
        await asyncio.sleep(self.ack_s)
        self.acked += 1


@pytest.mark.anyio
async def test_write_ack_next_cycle_sends_in_the_cycle_and_collects_the_ack_in_the_next(tmp_path: Path) -> None:
    writes = {}
    for ack in ("in_cycle", "next_cycle"):
        (tmp_path / ack).mkdir()
        loop, t, _ = make_loop(tmp_path / ack, replace={r"^auto_start = false": f'auto_start = true\nwrite_ack = "{ack}"'},
                               transport_cls=SlowAckTransport)

        async def go() -> list[tuple[int, int]]:
            sent_acked = []
            for _ in range(6):
                await loop.step()
                sent_acked.append((len(t.writes), t.acked))
            await loop.settle_writes()
            return sent_acked

        sent_acked = await go()
        writes[ack] = t.writes
        if ack == "in_cycle":
            assert all(sent == acked for sent, acked in sent_acked)
        else:  # every cycle's write has left when its step returns; its ack comes during the next
            assert [s for s, _ in sent_acked] == [1, 2, 3, 4, 5, 6]
            assert [a for _, a in sent_acked] == [0, 1, 2, 3, 4, 5]
            assert t.acked == 6
    assert writes["in_cycle"] == writes["next_cycle"]  # the same outputs, in the same order


@pytest.mark.anyio
async def test_write_ack_next_cycle_counts_a_failed_write_in_the_next_cycle_and_safe_write_is_last(tmp_path: Path) -> None:
    loop, t, _ = make_loop(tmp_path, replace={r"^auto_start = false": 'auto_start = true\nwrite_ack = "next_cycle"'},
                           transport_cls=SlowAckTransport)
    t.ack_s = 0.0
    await loop.step()
    await loop.step()
    assert loop.stats.write_errors == 0
    t.fail_writes = True
    await loop.step()  # its write fails while in flight
    t.fail_writes = False
    assert loop.stats.write_errors == 1  # failure in the write's own task, found by the step's sleep(0)
    await loop.step()
    assert loop.outputs.failed is False
    await loop.settle_writes()
    t.ack_s, acked = 0.01, t.acked  # acknowledgements now take a while
    await loop.step()  # a write in flight now
    await loop.estop.trip("operator_estop", "test")
    assert loop.modes.mode == Mode.ESTOP
    assert t.acked - acked == 3  # the in-flight write was acknowledged before the safe write went out
    assert action_writes(t)[-1]["coolant_flow_sp"] == loop.shield.safe[0]
    assert set(t.writes[-1]) == {"heartbeat"}  # the safe outputs, then the heartbeat


# ---- the PLC's authority as an input -------------------------------------------------------
@pytest.mark.parametrize(("tag", "value"), [("plc_remote", 0.0), ("plc_watchdog", 1.0)])
@pytest.mark.anyio
async def test_a_plc_that_stops_accepting_moves_auto_to_manual_and_back(tmp_path: Path, tag: str, value: float) -> None:
    loop, t, audit = make_loop(tmp_path)
    await steps(loop, 1)
    loop.request_start("alice")
    await steps(loop, 2)
    assert loop.modes.mode == Mode.AUTO and loop.authority.accepts is True
    t.values[tag] = value  # remote off, or the PLC's dead-man tripped
    n_writes = len(action_writes(t))
    await steps(loop, 1)  # seen in the very cycle that reads it
    assert loop.modes.mode == Mode.MANUAL and "plc_remote" in loop.manual_by
    assert loop.authority.accepts is False and "plc_not_accepting" in loop.alarms
    await steps(loop, 3)
    assert len(action_writes(t)) == n_writes  # no setpoint written while the PLC does not listen
    alarms = [p for k, p in audit.records if k == "alarm"]
    assert alarms == [{"alarm": "plc_not_accepting", "raised": True,
                       "message": "the PLC does not accept the gateway's setpoints"}]
    metric = loop.metrics.registry.get_sample_value("edgewarden_plc_accepts_setpoints")
    assert metric == 0.0
    t.values[tag] = 1.0 - value
    await steps(loop, 1)
    assert loop.modes.mode == Mode.AUTO and "plc_not_accepting" not in loop.alarms
    assert [p["raised"] for k, p in audit.records if k == "alarm"] == [True, False]


@pytest.mark.anyio
async def test_a_persistent_setpoint_mismatch_is_an_alarm_naming_the_action(tmp_path: Path) -> None:
    loop, t, audit = make_loop(tmp_path, replace={r'^policy_fault = "fallback"':
                                                  'policy_fault = "fallback"\napplied_settle_s = 0.05'})
    await steps(loop, 1)
    loop.request_start("alice")
    await steps(loop, 2)
    assert loop.modes.mode == Mode.AUTO
    t.values["coolant_flow"] = loop.action[0] + 50.0  # the PLC applies something else
    await run_for(loop, 0.03)
    assert "setpoint_mismatch:coolant_flow_sp" not in loop.alarms  # within the settle time
    t.values["coolant_flow"] = loop.action[0] + 50.0
    await run_for(loop, 0.08)
    assert list(loop.alarms) == ["setpoint_mismatch:coolant_flow_sp"]
    message = loop.alarms["setpoint_mismatch:coolant_flow_sp"]
    assert "coolant_flow_sp: written" in message and "PLC applies" in message
    assert loop.modes.mode == Mode.AUTO  # an alarm, not a trip
    t.values["coolant_flow"] = loop.action[0]
    await steps(loop, 1)
    t.values["coolant_flow"] = loop.action[0]
    await steps(loop, 1)
    assert not loop.alarms
    assert [(p["alarm"], p["raised"]) for k, p in audit.records if k == "alarm"] == [
        ("setpoint_mismatch:coolant_flow_sp", True), ("setpoint_mismatch:coolant_flow_sp", False)]


@pytest.mark.anyio
async def test_cycle_records_say_what_the_device_acknowledged(tmp_path: Path) -> None:
    """The audit record is the truth about outputs: ``ack`` per written tag (and the
    heartbeat), failed writes recorded as failed, ESTOP's safe write included."""
    loop, t, audit = make_loop(tmp_path)
    await steps(loop, 1)
    loop.request_start("alice")
    await steps(loop, 2)
    cycles = [p for k, p in audit.records if k == "cycle"]
    assert cycles[0]["written"] is None and cycles[0]["ack"] == ["ok"]  # heartbeat only
    assert cycles[-1]["written"] is not None and cycles[-1]["ack"] == ["ok", "ok", "ok"]
    assert cycles[-1]["age_ms"] is not None and cycles[-1]["age_ms"] >= 0.0
    t.fail_writes = True
    await steps(loop, 1)
    rec = [p for k, p in audit.records if k == "cycle"][-1]
    assert rec["written"] is not None and len(rec["ack"]) == 3
    assert all(a.startswith("failed: ") for a in rec["ack"]), rec["ack"]
    assert loop.stats.write_errors == 1


@pytest.mark.anyio
async def test_a_mode_change_during_the_write_does_not_relabel_the_cycle_that_wrote(tmp_path: Path) -> None:
    """An operator's MANUAL that lands while the policy's write is in flight: that cycle's
    record still says AUTO (the policy wrote it); the next cycle is MANUAL with no proposal."""
    loop, t, audit = make_loop(tmp_path)
    await steps(loop, 1)
    loop.request_start("alice")
    await steps(loop, 2)
    assert loop.modes.mode == Mode.AUTO
    real_write = t.write

    async def write_then_command(plan, values, deadline=None):  # type: ignore[no-untyped-def]
        await real_write(plan, values, deadline)
        if len(plan.names) > 1:  # the action write: the command arrives before it returns
            t.write = real_write  # type: ignore[method-assign]
            loop.request_manual("bob")

    t.write = write_then_command  # type: ignore[method-assign]
    await steps(loop, 2)
    last, this = [(p["mode"], p["proposed"], p["written"]) for k, p in audit.records if k == "cycle"][-2:]
    assert last[0] == "AUTO" and last[1] is not None and last[2] is not None  # the policy wrote
    assert this == ("MANUAL", None, None)  # the next cycle: nothing from the policy


@pytest.mark.anyio
async def test_apply_settings_swaps_the_safety_stack_between_cycles_and_keeps_its_history(tmp_path: Path) -> None:
    """The reload's real path: new limits apply from the next cycle, and the rate-of-change
    history of the running checker carries over (a fresh checker would pass the jump)."""
    loop, t, _ = make_loop(tmp_path)
    await steps(loop, 1)
    loop.request_start("alice")
    await steps(loop, 3)
    assert loop.modes.mode == Mode.AUTO
    (tmp_path / "new").mkdir()
    policy = tmp_path / "policy.onnx"
    tighter = load_config(write_config(tmp_path / "new", policy=policy,
                                       replace={r"^max_rate = 20.0 ": "max_rate = 10.0 "})).settings
    old_stack = loop.safety
    loop.apply_settings(tighter)
    assert loop.safety is not old_stack and loop.settings is tighter
    assert loop.checker.max_rate[loop.checker.names.index("Tj")] == 10.0
    t.values["Tj"] += 5.0  # 5 K in one 10 ms cycle: over either limit, judged against the old reading
    await steps(loop, 1)
    assert loop.modes.mode == Mode.ESTOP and loop.checker.verdict.code == "rate_of_change:Tj"


@pytest.mark.anyio
async def test_apply_settings_applies_new_hard_limits(tmp_path: Path) -> None:
    loop, _, _ = make_loop(tmp_path)
    await steps(loop, 1)
    loop.request_start("alice")
    await steps(loop, 3)
    (tmp_path / "new").mkdir()
    tighter = load_config(write_config(tmp_path / "new", policy=tmp_path / "policy.onnx", replace={
        r"^hard = \[290.0, 400.0\]": "hard = [290.0, 345.0]",
        r"^soft = \[320.0, 380.0\]": "soft = [320.0, 340.0]"})).settings
    loop.apply_settings(tighter)
    await steps(loop, 1)  # T = 350
    assert loop.modes.mode == Mode.ESTOP and loop.checker.verdict.code == "hard_limit:T:high"


@pytest.mark.anyio
async def test_a_trip_after_manual_puts_a_widened_band_back(tmp_path: Path) -> None:
    """MANUAL lets go of the incumbent without trouble; an e-stop after it used to leave a
    widened band in place (the reset ran only while the incumbent was engaged)."""
    loop, _, _ = make_loop(tmp_path, replace={
        r"^\[safety.fallback\]": "[safety.authority]\nband_configured_model = true\n\n[safety.fallback]"})
    trust = loop.safety.trust
    await steps(loop, 1)
    loop.request_start("alice")
    await steps(loop, 2)
    assert trust.engaged and trust.band.tolist() == [20.0, 20.0]
    trust.set_band("full", "alice", "earned")
    loop.request_manual("alice", None)
    await steps(loop, 2)
    assert loop.modes.mode == Mode.MANUAL and trust.band.tolist() == [200.0, 200.0]
    await loop.estop.trip("operator_estop", "test")
    await steps(loop, 1)
    assert trust.band.tolist() == [20.0, 20.0]
