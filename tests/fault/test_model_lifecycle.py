"""Model lifecycle against the real twin: refusals leave the running model alone; live swap,
shadow-then-promote without a missed deadline; automatic rollback when a new model faults."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from edgewarden.data import MODELS
from edgewarden.gateway.policy.contract import ObsStats, PolicyContract
from tests.fault.harness import Bench, bench, wait_for
from tests.helpers import contract, write_spinning_policy
from edgewarden.training.onnx_graph import build_linear_policy, build_mlp_policy, write_model

P_LAW = (np.array([[16.0, 0.0, 0.0, -16.0], [0.0, 0.0, 0.0, 0.0]]), np.array([100.0, 100.0]))


def linear(path: Path, c: PolicyContract | None = None, law: tuple = P_LAW) -> Path:
    return write_model(path, build_linear_policy(c or contract(), *law))


def nan_model(path: Path, c: PolicyContract | None = None) -> Path:
    hidden = (np.array([[3e38, 0, 0, 0], [3e38, 0, 0, 0]]), np.zeros(2))
    head = (np.array([[1.0, -1.0], [0.0, 0.0]]), np.array([0.0, 100.0]))
    return write_model(path, build_mlp_policy(c or contract(), [hidden, head]))


def with_(c: PolicyContract, **kw: Any) -> PolicyContract:
    return c.replaced(**kw)


async def model(b: Bench, action: str, path: Path | None = None, **kw: Any) -> dict[str, Any]:
    extra = {"path": str(path)} if path is not None else {}
    return await b.cmd("model", action=action, **extra, **kw)


@pytest.mark.anyio
async def test_bad_models_are_refused_and_the_running_model_is_unaffected(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    pub = tmp_path / "model.pub"
    pub.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    shipped = MODELS / "cstr_baseline.onnx"

    c = contract()
    stats = ObsStats(min=(340.0, 0.3, 320.0, 340.0), max=(360.0, 0.7, 345.0, 360.0),
                     mean=(350.0, 0.5, 332.0, 350.0), std=(3.0, 0.05, 3.0, 3.0))
    bad = {
        "tag names": (linear(tmp_path / "names.onnx", with_(c, observation_tags=("T", "CA", "Tj", "T_set"))),
                      "T_set"),
        "units": (linear(tmp_path / "units.onnx", with_(c, observation_units=("degC", "mol/L", "K", "K"))),
                  "degC"),
        "shape": (write_model(tmp_path / "shape.onnx", build_linear_policy(
            with_(c, observation_tags=("T", "CA", "Tj"), observation_units=("K", "mol/L", "K")),
            np.zeros((2, 3)), np.zeros(2))), "observation"),
        "missing metadata": (tmp_path / "nometa.onnx", "contract"),
        "NaN-producing": (nan_model(tmp_path / "nan.onnx", with_(c, obs_stats=stats)), "non-finite"),
        "corrupted": (tmp_path / "corrupt.onnx", "not a loadable ONNX model"),
        "missing file": (tmp_path / "absent.onnx", "not found"),
    }
    import onnx

    m = onnx.load_from_string(linear(tmp_path / "tmp.onnx").read_bytes())
    del m.metadata_props[:]
    (tmp_path / "nometa.onnx").write_bytes(m.SerializeToString())
    (tmp_path / "corrupt.onnx").write_bytes(shipped.read_bytes()[:300])

    async def go() -> None:  # the shipped model is unsigned: with a pubkey the gateway refuses it
        async with bench(tmp_path, replace={r"^observations = \[": f'pubkey = "{pub}"\nobservations = ['}):
            pass

    try:
        await go()
        raise AssertionError("a gateway with [policy] pubkey started an unsigned model")
    except Exception as exc:  # noqa: BLE001 - PolicyError from Gateway.run
        assert "signature is required" in str(exc) or ".sig not found" in str(exc), exc

    async def go2() -> None:
        async with bench(tmp_path / "g2") as b:
            await b.start_auto()
            active = (await model(b, "status"))["models"]["active"]
            for what, (path, needle) in bad.items():
                reply = await model(b, "load", path)
                assert not reply["ok"], what
                assert needle in reply["error"], (what, reply["error"])
            reply = await model(b, "load", linear(tmp_path / "pin.onnx"), sha256="0" * 64)
            assert not reply["ok"] and "0000000000" in reply["error"]
            await asyncio.sleep(0.3)
            st = await model(b, "status")
            assert st["models"]["active"] == active and st["mode"] == "AUTO"
            assert b.twin_setpoints()[1] == 100.0
    (tmp_path / "g2").mkdir()
    await go2()


def test_signed_model_loads_and_a_bad_signature_is_refused(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    pub = tmp_path / "model.pub"
    pub.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    shipped = MODELS / "cstr_baseline.onnx"
    signed = tmp_path / "policy.onnx"
    signed.write_bytes(shipped.read_bytes())
    (tmp_path / "policy.onnx.sig").write_bytes(key.sign(signed.read_bytes()))
    other = linear(tmp_path / "other.onnx")
    (tmp_path / "other.onnx.sig").write_bytes(Ed25519PrivateKey.generate().sign(other.read_bytes()))

    from edgewarden.gateway.config import load_config
    from edgewarden.gateway.errors import PolicyError
    from edgewarden.gateway.policy.registry import load_verified
    from tests.helpers import write_config

    s = load_config(write_config(tmp_path, policy=signed, replace={
        r"^observations = \[": f'pubkey = "{pub}"\nobservations = ['})).settings
    assert load_verified(s, signed).sha256
    try:
        load_verified(s, other)
        raise AssertionError("a model signed by another key was accepted")
    except PolicyError as exc:
        assert "does not verify" in str(exc)


@pytest.mark.anyio
async def test_a_model_that_never_finishes_warming_up_is_refused_stopped_and_audited(tmp_path: Path) -> None:
    """It used to hold the command (and the file watcher) for as long as it ran, and its
    thread the daemon's exit; now it is refused at load_timeout_s and its warm-up stopped."""
    import threading
    import time

    spinning = write_spinning_policy(tmp_path / "spin.onnx")
    dropped = tmp_path / "drop.onnx"
    dropped.write_bytes(MODELS.joinpath("cstr_baseline.onnx").read_bytes())
    async with bench(tmp_path, replace={r"^actions = \[": "load_timeout_s = 0.5\nactions = [",
                                        r'^path = "[^"]*"': f'path = "{dropped}"\nwatch = true'}) as b:
        await b.start_auto()
        active = (await model(b, "status"))["models"]["active"]
        for action in ("load", "shadow"):
            t0 = time.monotonic()
            reply = await model(b, action, spinning)
            assert not reply["ok"] and "load_timeout_s = 0.5 s" in reply["error"], reply
            assert time.monotonic() - t0 < 5
            # the warm-up really stopped: no validation thread left running
            await wait_for(lambda: not any(t.name == "model-validate" for t in threading.enumerate()),
                           "the stopped warm-up's thread to end")
        dropped.write_bytes(spinning.read_bytes())  # a file drop: refused and audited
        await wait_for(lambda: any(r["kind"] == "model_refused" for r in b.audit_records()),
                       "the file drop's refusal on record")
        refused = [r for r in b.audit_records() if r["kind"] == "model_refused"]
        assert refused[0]["actor"] == "file drop" and "load_timeout_s" in refused[0]["error"]
        st = await model(b, "status")
        assert st["models"]["active"] == active and st["models"]["shadow"] is None and st["mode"] == "AUTO"
        ops = [r for r in b.audit_records() if r["kind"] == "operator" and r.get("action") in ("load", "shadow")]
        assert [r["outcome"] for r in ops] == ["refused", "refused"], ops
        assert (await model(b, "load", linear(tmp_path / "good.onnx")))["ok"]  # the next load is not held up
        await wait_for(lambda: b.gateway.loop.policy.sha256 != active, "the good model's swap")


@pytest.mark.anyio
async def test_live_swap_shadow_promote_and_automatic_rollback(tmp_path: Path) -> None:
    # 10 Hz: the twin's servers share this event loop; the deadline claim is about the
    # gateway's validation running off the loop, not about a loaded test machine
    # the off-policy estimate's gate has its own tests (tests/unit/policy/test_promotion_estimate.py)
    async with bench(tmp_path, replace={r"^actions = \[": "promote_after_s = 1.0\npromote_requires_estimate = false\n"
                                                         "actions = [",
                                        r"^cycle_hz = 10.0": "cycle_hz = 10.0"}) as b:
        await b.start_auto()
        first = (await model(b, "status"))["models"]["active"]
        misses = b.gateway.loop.stats.deadline_misses  # validation runs off the event loop

        # live swap between cycles
        reply = await model(b, "load", linear(tmp_path / "p16.onnx"))
        assert reply["ok"], reply
        await wait_for(lambda: b.gateway.loop.policy.sha256 != first, "the swap")
        swapped = b.gateway.loop.policy.sha256

        # shadow: audited, never written; promote refused until it has agreed long enough
        same_law = linear(tmp_path / "shadow.onnx", law=(P_LAW[0], P_LAW[1] + 1.0))  # 1 L/min apart
        assert (await model(b, "shadow", same_law))["ok"]
        early = await model(b, "promote")
        assert not early["ok"] and "agreed for" in early["error"]
        await asyncio.sleep(1.2)  # a second of its history first: a transient is a move within a second
        b.twin.image.set("T_sp", 352.0)  # a transient while it runs (steady state alone is no evidence)
        await asyncio.sleep(1.5)
        promoted = await model(b, "promote")
        assert promoted["ok"], promoted
        await wait_for(lambda: b.gateway.loop.policy.sha256 not in (first, swapped), "the promotion")
        promoted = b.gateway.loop.policy.sha256
        cycles = [r for r in b.audit_records() if r["kind"] == "cycle" and "shadow" in r]
        assert cycles and all(r["shadow"]["would_write"] is not None for r in cycles)
        assert b.gateway.loop.stats.deadline_misses == misses

        # a new model that faults is rolled back automatically to the one before it
        assert (await model(b, "load", nan_model(tmp_path / "nan.onnx")))["ok"]
        await wait_for(lambda: b.gateway.loop.models.previous is not None
                       and b.gateway.loop.policy.sha256 == promoted
                       and b.gateway.loop.stats.policy_faults > 0, "the automatic rollback")
        assert b.mode == "AUTO"
        kinds = [(r["kind"], r.get("reason", "")) for r in b.audit_records() if r["kind"].startswith("model_")]
        assert any(k == "model_rollback" and "automatic" in reason for k, reason in kinds)
        swaps = [r for r in b.audit_records() if r["kind"] == "model_swap"]
        assert all(r["sha256"] and r["previous"] for r in swaps)  # both hashes on record
