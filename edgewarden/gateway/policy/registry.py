"""Model lifecycle: verified loads, atomic swaps between cycles, shadow, promote, rollback.

    load     validate completely (signature, SHA-256 pin, contract against the tag map,
             graph, warm-up) → staged; the cycle swaps it in at the start of its next step
    shadow   a candidate runs every cycle beside the active model on the same inputs; its
             proposal and the action the shield *would* write are audited and compared
             (divergence, would-be interventions), never written
    promote  the shadow becomes active once it has agreed for ``promote_after_s``, has seen
             ``promote_min_transients`` transients and does not copy its own output
             (edgewarden/gateway/policy/evidence.py; the evidence goes into the record);
             ``--force`` with a reason overrides, on record (``auto_promote``: by itself)
    rollback back to the previous model, by command, or automatically when a model that
             was swapped in less than ``rollback_window_s`` ago faults or falls back

Every step is an audit record carrying both model hashes. A model that fails validation
never reaches the cycle: the running model is unaffected. Validation runs in a worker thread
bounded by ``[policy] load_timeout_s``: one that takes longer is refused and its warm-up
stopped, so a slow or never-ending model cannot hold a command, the file watcher or the
daemon's exit.
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgewarden.gateway.config import Settings
from edgewarden.gateway.errors import PolicyError
from edgewarden.gateway.policy.evidence import Copying, TransientWatch, copying, echo_observations, sensitivity
from edgewarden.gateway.policy.onnx_policy import OnnxPolicy, WarmupStop
from edgewarden.gateway.safety.fault import first_line
from edgewarden.gateway.safety.shield import ActionShield
from edgewarden.gateway.safety.supervisor import ood_bounds, uncertainty_limit
from edgewarden.gateway.readfile import read_regular


class AuditSink(Protocol):
    def append(self, kind: str, payload: dict) -> int: ...


def expected_io(s: Settings) -> tuple[list[tuple[str, str]], list[tuple[str, str, float, float]]]:
    obs = [(t, s.tags[t].units) for t in s.policy.observations]
    act = [(t, s.tags[t].units, s.safety.actions[t].min, s.safety.actions[t].max) for t in s.policy.actions]
    return obs, act


def verify_signature(path: Path, pubkey: Path) -> str:
    """Check the detached Ed25519 signature ``path.sig``; returns the file's SHA-256."""
    import hashlib

    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    sig_path = path.with_name(path.name + ".sig")
    data = read_regular(path, what="policy model", max_bytes=1 << 30, error=PolicyError)
    if not sig_path.exists():
        raise PolicyError(f"policy model '{path}' refused: {sig_path} not found "
                          "(a signature is required: [policy] pubkey is set)") from None
    signature = read_regular(sig_path, what="model signature", max_bytes=4096, error=PolicyError)
    try:
        key = load_pem_public_key(read_regular(pubkey, what="model public key", max_bytes=65536, error=PolicyError))
    except ValueError as exc:
        raise PolicyError(f"policy model '{path}' refused: cannot read the public key {pubkey}: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise PolicyError(f"policy model '{path}' refused: {pubkey} is not an Ed25519 public key")
    if len(signature) != 64:
        import base64
        import binascii

        try:
            signature = base64.b64decode(signature.strip(), validate=True)
        except (binascii.Error, ValueError):
            pass
    try:
        key.verify(signature, data)
    except InvalidSignature:
        raise PolicyError(f"policy model '{path}' refused: the signature {sig_path.name} does not verify "
                          f"with {pubkey}") from None
    return hashlib.sha256(data).hexdigest()


def load_verified(s: Settings, path: Path, sha256: str | None = None, stop: WarmupStop | None = None) -> OnnxPolicy:
    """Everything a model must pass before it may run: signature, pin, contract, graph, warm-up."""
    path = Path(path)
    if s.policy.pubkey is not None:
        signed = verify_signature(path, s.policy.pubkey)
        if sha256 is not None and sha256.lower() != signed:
            raise PolicyError(f"policy model '{path}' refused: SHA-256 {signed} is not the pinned {sha256}")
        sha256 = signed  # load refuses a file that changed after its signature was checked
    obs, act = expected_io(s)
    return OnnxPolicy.load(path, expected_obs=obs, expected_act=act, sha256=sha256,
                           max_bytes=int(s.policy.max_model_mb * 2**20), stop=stop)


EVIDENCE_SAMPLES = 256  # shadow inputs kept (a ring) for the sensitivity at promotion
EVIDENCE_ROWS = 8192  # at most this many rows in the one batch the sensitivity runs


@dataclass
class ShadowReport:
    divergence: float = math.nan
    would_intervene: bool = False
    agree_s: float = 0.0
    cycles: int = 0
    faults: int = 0


def shadow_tolerances(settings: Settings) -> np.ndarray:
    """Per action, how far a shadow's proposal may be from the active one's and still agree:
    ``[policy] shadow_tolerance``, by default 5 % of the action's configured span."""
    shield = ActionShield(settings)
    span = shield.hi - shield.lo
    tol = settings.policy.shadow_tolerance
    return np.array([tol.get(a, 0.05 * s) for a, s in zip(settings.policy.actions, span)])


class ModelManager:
    """Owns the active, previous, staged and shadow models of one control loop."""

    def __init__(self, settings: Settings, active: OnnxPolicy | Any, audit: AuditSink) -> None:
        self.settings = settings
        self.audit = audit
        self.active = active
        self.configured = active  # the model [policy] path names (commissioned: full authority)
        self.previous: Any | None = None
        self.staged: Any | None = None
        self.staged_reason = ""
        self.shadow: Any | None = None
        self.report = ShadowReport()
        self.swapped_at = -math.inf
        shield = ActionShield(settings)
        self._shadow_shield = shield
        self._tol = shadow_tolerances(settings)
        self._shadow_last = shield.safe.copy()
        self._shadow_out = np.zeros(len(self._tol))
        self._agree_since = math.nan
        p = settings.policy
        self._span = shield.hi - shield.lo
        self._echoes = echo_observations(p.observations, p.actions,
                                         {a: settings.safety.actions[a].applied for a in p.actions})
        self._samples = np.zeros((min(EVIDENCE_SAMPLES, max(1, EVIDENCE_ROWS // (2 * len(p.observations)))),
                                  len(p.observations)))
        self._n_samples = 0
        self._transients = TransientWatch(self._span, 1.0 / settings.gateway.cycle_hz,
                                          list(settings.policy.observations))
        self._auto_tried = -1  # the transient count auto_promote last tried at
        self._shadow_ood: tuple[np.ndarray, ...] = ()
        self._shadow_unc_limit = math.inf
        self._shadow_cycle = -2  # the cycle number of the shadow's last step
        self._validating = False

    # ---- commands (between cycles, on the event loop) ------------------------------
    async def validate(self, path: Path, sha256: str | None = None) -> OnnxPolicy:
        """:func:`load_verified` in a worker thread (the cycle keeps its deadlines), bounded
        by ``[policy] load_timeout_s``: past it the warm-up is stopped and the model refused.
        The thread is a daemon one, so even a model stuck where it cannot be stopped (building
        its session) never holds the daemon's exit; meanwhile no other validation starts."""
        if self._validating:
            raise PolicyError(f"policy model {str(path)!r} refused: the model before it is still being "
                              "validated (it ran past [policy] load_timeout_s and is being stopped)")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[OnnxPolicy] = loop.create_future()
        stop = WarmupStop()

        def settle(result: OnnxPolicy | None, exc: BaseException | None) -> None:
            self._validating = False
            if not done.done():
                done.set_exception(exc) if exc is not None else done.set_result(result)  # type: ignore[arg-type]

        def work() -> None:
            try:
                result, exc = load_verified(self.settings, path, sha256, stop), None
            except BaseException as e:  # noqa: BLE001 - handed to the awaiting coroutine
                result, exc = None, e
            try:
                loop.call_soon_threadsafe(settle, result, exc)
            except RuntimeError:  # the loop closed meanwhile: nobody is waiting any more
                pass

        self._validating = True
        threading.Thread(target=work, name="model-validate", daemon=True).start()
        limit = self.settings.policy.load_timeout_s
        try:
            return await asyncio.wait_for(asyncio.shield(done), limit)
        except TimeoutError:
            raise PolicyError(f"policy model {str(path)!r} refused: validation took longer than [policy] "
                              f"load_timeout_s = {limit:g} s (its warm-up was stopped); the running model "
                              "stays") from None
        finally:
            if not done.done():  # timed out, or the command itself was cancelled: stop the warm-up
                stop()
                done.cancel()  # its refusal has nobody to go to

    async def load(self, path: Path, actor: str, sha256: str | None = None) -> Any:
        """Validate ``path`` and stage it as the next active model. Raises PolicyError."""
        policy = await self.validate(path, sha256)
        self.staged, self.staged_reason = policy, f"load by {actor}"
        self._record("model_load", policy, actor, path=str(path))
        return policy

    async def watch_file(self, path: Path, sha256: str | None, stop: asyncio.Event, log: Any) -> None:
        """File drop (``[policy] watch``): a changed model file (modification time or size,
        checked every second) is validated and staged like ``model load``; a refused one
        is logged and audited (``model_refused``) and the running model stays."""

        def stamp() -> tuple[int, int] | None:
            try:
                st = path.stat()
            except OSError:
                return None
            return st.st_mtime_ns, st.st_size

        last = stamp()
        while not stop.is_set():
            await asyncio.sleep(1.0)
            now = stamp()
            if now is None or now == last:
                continue
            last = now
            try:
                await self.load(path, "file drop", sha256)
            except PolicyError as exc:
                log.error("model file changed but was refused; the running model stays", error=str(exc))
                self.audit.append("model_refused", {"path": str(path), "actor": "file drop", "error": str(exc),
                                                    "active": self.active.sha256, "t_mono": time.monotonic()})

    async def start_shadow(self, path: Path, actor: str, sha256: str | None = None) -> Any:
        policy = await self.validate(path, sha256)
        self.shadow = policy
        self.report = ShadowReport()
        self._agree_since = math.nan
        self._n_samples = 0
        self._transients.reset()
        self._auto_tried = -1
        fb = self.settings.safety.fallback
        self._shadow_ood = ood_bounds(policy, fb.ood_margin, fb.ood_z, len(self.settings.policy.observations))
        self._shadow_unc_limit = uncertainty_limit(policy, fb.uncertainty_scale)
        self._shadow_last[:] = self._shadow_shield.safe
        self._record("model_shadow", policy, actor, path=str(path))
        return policy

    def promote(self, actor: str, *, force_reason: str | None = None) -> Any:
        """The shadow becomes the next active model, if its evidence holds (agreement for
        ``promote_after_s``, transients seen, no copying of its own output); ``force_reason``
        overrides what does not, on record. Raises PolicyError naming what is missing."""
        if self.shadow is None:
            raise PolicyError("promote refused: no model is running in shadow mode")
        evidence = self.evidence()
        problems = self._problems(evidence)
        if problems and force_reason is None:
            raise PolicyError("promote refused: " + "; ".join(problems)
                              + " (model promote --force --reason TEXT overrides, on record)")
        policy, self.shadow = self.shadow, None
        self.staged, self.staged_reason = policy, f"promote by {actor}"
        self._record("model_promote", policy, actor, evidence=evidence, problems=problems,
                     **({"forced": force_reason} if problems else {}))
        return policy

    def evidence(self) -> dict[str, Any]:
        """What the shadow showed: agreement, transients, and which actions copy their own
        output (the sensitivity of each action to each observation on the inputs it saw)."""
        shadow = self.shadow
        p = self.settings.policy
        n = min(self._n_samples, len(self._samples))
        out: dict[str, Any] = {"agree_s": round(self.report.agree_s, 3), "cycles": self.report.cycles,
                               "transients": self._transients.report.to_dict(), "samples": n, "copying": [],
                               "off_policy": getattr(shadow, "off_policy", None)}
        if shadow is None or n < 2 or not hasattr(shadow, "infer_batch"):
            return out
        x = self._samples[:n]
        stats = getattr(shadow.contract, "obs_stats", None)
        scale = np.asarray(stats.std, dtype=float) if stats is not None else x.std(axis=0)
        scale = np.where(scale > 0, scale, x.std(axis=0))
        for i, j in self._echoes.items():  # a readback probed by at least 1 % of its action's span
            scale[i] = max(scale[i], 0.01 * self._span[j])
        try:
            sens = sensitivity(shadow.infer_batch, x, scale, self._span)
        except Exception as exc:  # noqa: BLE001 - e.g. a graph fixed to batch 1: no evidence, not a trip
            out["sensitivity_error"] = first_line(exc)
            return out
        out["sensitivity"] = {a: dict(zip(p.observations, np.round(row, 6).tolist()))
                              for a, row in zip(p.actions, sens)}
        out["copying"] = [asdict(c) for c in copying(sens, self._echoes, p.observations, p.actions)]
        return out

    def _problems(self, evidence: dict[str, Any]) -> list[str]:
        p = self.settings.policy
        out = [Copying(**c).message() for c in evidence["copying"]]
        if "sensitivity_error" in evidence:
            out.append(f"its sensitivity to its observations could not be computed ({evidence['sensitivity_error']}): "
                       "whether it copies its own output is unknown")
        if self.report.agree_s < p.promote_after_s:
            out.append(f"the shadow model has agreed for {self.report.agree_s:.1f} s of the {p.promote_after_s:g} s "
                       f"required (last divergence {self.report.divergence:.4g})")
        seen = evidence["transients"]["transients"]
        if seen < p.promote_min_transients:
            out.append(f"the shadow saw {seen} transients of the {p.promote_min_transients} required "
                       "(promote_min_transients): its agreement is steady state only; step the setpoint or wait "
                       "for a disturbance while it runs")
        if p.promote_requires_estimate:
            problem = self._estimate_problem(evidence["off_policy"])
            if problem:
                out.append(problem)
        return out

    def _estimate_problem(self, est: dict[str, Any] | None) -> str | None:
        """What the manifest's off-policy estimate does not show (None: it shows the model
        better than the running controller, on that controller's own history)."""
        if est is None:
            return ("its manifest holds no off-policy estimate (promote_requires_estimate): run edgewarden train "
                    "report MODEL.onnx --dataset HISTORY.h5 on this plant's history with a reward (train "
                    "from-audit --reward-track), then shadow it again")
        verdict = est.get("verdict")
        def num(key: str) -> str:
            v = est.get(key)
            return f"{v:+.4g}" if isinstance(v, (int, float)) else "?"

        figures = (f"difference {num('difference')} [{num('low')}, {num('high')}] in mean reward per step "
                   f"(r = {est.get('reward')!s:.120})")
        if verdict != "better":
            return (f"the off-policy estimate on the plant's history does not show it better than the controller "
                    f"that wrote it ({verdict!s:.40}): {figures}")
        behaviour = str(est.get("behaviour", ""))
        named = re.fullmatch(r"(?:onnx|pid|hold):([0-9a-f]{16,64})", behaviour)  # one controller, by its hash
        active = getattr(self.active, "sha256", "")
        if named is None or not active.startswith(named.group(1)):
            return (f"the off-policy estimate compares it with {behaviour[:120] or 'an unnamed controller'}, not "
                    f"with the running controller ({active[:16]}): estimate it on history the running controller "
                    "wrote alone")
        return None

    def rollback(self, actor: str, reason: str) -> Any:
        if self.previous is None:
            raise PolicyError("rollback refused: there is no previous model")
        self.staged, self.staged_reason = self.previous, f"rollback by {actor}: {reason}"
        self._record("model_rollback", self.previous, actor, reason=reason)
        return self.previous

    # ---- the cycle's side ------------------------------------------------------------
    def take_staged(self, now: float) -> Any | None:
        """At the start of a cycle: the model to swap in, if one is staged."""
        if self.staged is None:
            return None
        new, self.staged = self.staged, None
        if new is not self.active:
            self.previous, self.active = self.active, new
            # a rollback is never rolled back by itself: that would hand control straight
            # back to the model that just failed
            self.swapped_at = -math.inf if self.staged_reason.startswith("rollback") else now
            self._record("model_swap", new, "gateway", reason=self.staged_reason)
        return new

    @property
    def rolling_back(self) -> bool:
        """The staged model is a rollback (the controller before the active one)."""
        return self.staged is not None and self.staged_reason.startswith("rollback")

    def on_trouble(self, reason: str, now: float) -> bool:
        """A fault or a fall-back: roll a recently swapped model back. True if staged."""
        if self.previous is None or now - self.swapped_at > self.settings.policy.rollback_window_s:
            return False
        if self.staged is not None:
            return True
        self.rollback("gateway", f"automatic: {reason}")
        return True

    def shadow_step(self, obs: np.ndarray, active_action: np.ndarray | None, lo: np.ndarray,
                    hi: np.ndarray, dt: float, now: float, cycle: int) -> dict[str, Any] | None:
        """Run the shadow on cycle number ``cycle``'s inputs; returns the audit payload (never written)."""
        shadow = self.shadow
        if shadow is None:
            return None
        r = self.report
        r.cycles += 1
        if cycle != self._shadow_cycle + 1:  # cycles without a shadow step (HOLD, MANUAL): no transient spans them
            self._transients.forget()  # (counted in cycles: a late cycle is no gap)
        self._shadow_cycle = cycle
        self._samples[self._n_samples % len(self._samples)] = obs
        self._n_samples += 1
        try:
            proposed = shadow.infer(obs)
        except PolicyError as exc:
            r.faults += 1
            self._agree_since = math.nan
            r.agree_s = 0.0
            return {"sha256": shadow.sha256, "fault": str(exc)}
        unc = shadow.uncertainty
        lo_ood, hi_ood, mean, std, z = self._shadow_ood  # the candidate's own training distribution
        ood = bool(((obs < lo_ood) | (obs > hi_ood) | (np.abs(obs - mean) > z * std)).any()) or unc > self._shadow_unc_limit
        res = self._shadow_shield.apply(proposed, self._shadow_last, dt, self._shadow_out, lo, hi)
        r.would_intervene = (not res.ok) or res.code != "ok"
        if res.ok:
            self._shadow_last[:] = self._shadow_out
        r.divergence = math.nan if active_action is None else float(np.max(np.abs(proposed - active_action)))
        agrees = active_action is not None and bool((np.abs(proposed - active_action) <= self._tol).all())
        if agrees and res.ok:
            if math.isnan(self._agree_since):
                self._agree_since = now
            r.agree_s = now - self._agree_since
        else:
            self._agree_since = math.nan
            r.agree_s = 0.0
        transient = active_action is not None and self._transients.step(active_action, agrees,
                                                                         np.abs(proposed - active_action), obs)
        self._auto_promote()
        out = {"sha256": shadow.sha256, "proposed": proposed.tolist(),
               "would_write": self._shadow_out.tolist() if res.ok else None,
               "divergence": r.divergence, "would_intervene": r.would_intervene, "ood": bool(ood)}
        if unc == unc:  # the candidate's own uncertainty about this input, when it has an output for it
            out["unc"] = round(unc, 6) if unc != math.inf else "inf"
        if transient:
            out["transient"] = True
        return out

    def _auto_promote(self) -> None:
        """``auto_promote``: tried once agreement is long enough, and again after each new
        transient (the evidence is computed then, not every cycle); a refusal is audited."""
        p = self.settings.policy
        seen = self._transients.report.transients
        if not p.auto_promote or self.report.agree_s < p.promote_after_s or seen == self._auto_tried:
            return
        self._auto_tried = seen
        try:
            self.promote("gateway (auto_promote)")
        except PolicyError as exc:
            self.audit.append("model_refused", {"path": None if self.shadow is None or self.shadow.path is None
                                                else str(self.shadow.path), "actor": "gateway (auto_promote)",
                                                "error": str(exc), "active": self.active.sha256,
                                                "t_mono": time.monotonic()})

    def describe(self) -> dict[str, Any]:
        def h(p: Any) -> str | None:
            return None if p is None else p.sha256
        return {"active": h(self.active), "previous": h(self.previous), "staged": h(self.staged),
                "shadow": h(self.shadow), "shadow_agree_s": self.report.agree_s,
                "shadow_transients": self._transients.report.transients if self.shadow is not None else None,
                "shadow_divergence": None if math.isnan(self.report.divergence) else self.report.divergence}

    def _record(self, kind: str, policy: Any, actor: str, **extra: Any) -> None:
        self.audit.append(kind, {"sha256": policy.sha256, "active": self.active.sha256,
                                 "previous": None if self.previous is None else self.previous.sha256,
                                 "path": None if policy.path is None else str(policy.path), "actor": actor,
                                 "t_mono": time.monotonic(), **extra})
