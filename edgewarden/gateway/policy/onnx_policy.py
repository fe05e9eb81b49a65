"""The ONNX policy the gateway runs: load, verify against the plant, warm up, infer.

:meth:`OnnxPolicy.load` refuses, with one :class:`PolicyError` paragraph naming the file
and the reason, anything that is not exactly the model this plant expects: a missing or
unreadable file, bytes that differ from a pinned SHA-256, bytes onnxruntime cannot load,
a model without the ``edgewarden.contract`` metadata or with a bad one, a contract that
does not match the configured tags, units or action bounds, and a graph whose input or
output names, shapes or dtypes disagree with the contract.

The hot path (:meth:`OnnxPolicy.infer`) uses an IOBinding over two pre-allocated
buffers: the observation is copied into a (1, n_obs) float32 array whose memory the
session reads directly, and the session writes straight into a (1, n_act) float32
array. Measured on the 2-core CI-class machine for a 16→256→256→4 MLP, this is ~25%
faster than ``session.run`` with a feed dict (see benchmarks/bench_policy.py).

An ``OnnxPolicy`` is not thread-safe: one control loop owns it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edgewarden.gateway.errors import PolicyError
from edgewarden.gateway.policy.contract import METADATA_KEY, PolicyContract, check_against
from edgewarden.gateway.readfile import read_regular, read_text

__all__ = ["OnnxPolicy", "WARMUP_RUNS", "WarmupStop", "read_manifest", "session_options"]

WARMUP_RUNS = 20
_FLOAT = "tensor(float)"


def session_options() -> ort.SessionOptions:
    """Options tuned for single-sample latency (see docs: no thread-pool wake-up spikes)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3  # errors only; refusals are reported through PolicyError
    return so


class WarmupStop:
    """Stops a load's warm-up from another thread: onnxruntime's terminate flag, checked
    between nodes (inside a Loop too), so a model that would never finish warming up ends
    with a :class:`PolicyError` instead of holding its thread."""

    def __init__(self) -> None:
        self.options = ort.RunOptions()
        self.options.log_severity_level = 4  # the refusal reports it; no onnxruntime log line

    def __call__(self) -> None:
        self.options.terminate = True


def read_manifest(path: Path, digest: str) -> tuple[dict[str, Any], str | None]:
    """The manifest ``FILE.json`` beside the model ({} when there is none) and what is
    wrong between it and the model (None when it names this file's hash)."""
    manifest = path.with_name(path.name + ".json")
    if not manifest.exists() and not manifest.is_symlink():
        return {}, None
    try:
        text = read_text(manifest, what="manifest", max_bytes=16 * 2**20, error=PolicyError)
    except PolicyError as e:
        return {}, f"its manifest {manifest.name} cannot be read ({str(e).split(': ', 1)[-1]})"
    try:
        content = json.loads(text)
        recorded = content["sha256"].strip().lower().removeprefix("sha256:")
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return {}, f"its manifest {manifest.name} is not a model manifest (no \"sha256\")"
    if recorded != digest:
        return {}, (f"SHA-256 {digest} differs from the one in its manifest {manifest.name} ({recorded}): the "
                    "model was changed after it was shipped, or the manifest is another model's")
    return content, None


def _dim_ok(dim: object, want: int | None) -> bool:
    """A graph dimension fits: ``want=None`` is the batch dim (symbolic or 1)."""
    if want is None:
        return dim is None or isinstance(dim, str) or dim == 1
    return dim == want


class OnnxPolicy:
    """A verified, warmed-up ONNX policy. Build with :meth:`load`."""

    __slots__ = (
        "_act_out",
        "_act_row",
        "_binding",
        "_contract",
        "_manifest",
        "_obs_in",
        "_obs_row",
        "_obs_shape",
        "_path",
        "_run_options",
        "_session",
        "_sha256",
        "_unc_out",
    )

    def __init__(self, *_: object, **__: object) -> None:
        raise TypeError("use OnnxPolicy.load(path, expected_obs=..., expected_act=...)")

    # ------------------------------------------------------------------ load
    @classmethod
    def load(
        cls,
        path: Path,
        *,
        expected_obs: Sequence[tuple[str, str]],
        expected_act: Sequence[tuple[str, str, float, float]],
        sha256: str | None = None,
        max_bytes: int = 16 * 2**20,
        stop: WarmupStop | None = None,
    ) -> OnnxPolicy:
        """Load ``path``, verify it against the plant and warm it up.

        ``expected_obs``: ``[(tag, units)]`` in feed order; ``expected_act``:
        ``[(tag, units, low, high)]`` with the configured bounds; ``sha256``: optional
        lower-case hex digest the file must have; ``max_bytes``: larger files are refused
        unread. A manifest ``FILE.json`` beside the model (``train ship`` writes one), when
        present, must name the file's SHA-256; ``stop``: calling it from another thread ends
        a warm-up under way (refused). Raises :class:`PolicyError`.
        """
        path = Path(path)

        def refuse(reason: str) -> PolicyError:
            return PolicyError(f"policy model {str(path)!r} refused: {reason}")

        try:
            data = read_regular(path, what="the file", max_bytes=max_bytes, error=PolicyError)
        except PolicyError as e:
            why = str(e).split(": ", 1)[-1]
            if "allowed for it" in why:
                why += " ([policy] max_model_mb: loading it would stall the running cycle)"
            raise refuse(why) from None
        digest = hashlib.sha256(data).hexdigest()
        if sha256 is not None:
            pinned = sha256.strip().lower().removeprefix("sha256:")
            if pinned != digest:
                raise refuse(f"SHA-256 mismatch: pinned {pinned}, file has {digest}")
        manifest, problem = read_manifest(path, digest)
        if problem is not None:
            raise refuse(problem)

        try:
            session = ort.InferenceSession(data, session_options(), providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own pybind exception types
            raise refuse(f"not a loadable ONNX model ({_first_line(e)})") from None

        meta = session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in meta:
            raise refuse(
                f"no {METADATA_KEY!r} metadata: the model carries no contract "
                "(export it with edgewarden.training.onnx_graph)"
            )
        try:
            contract = PolicyContract.from_json(meta[METADATA_KEY])
            check_against(contract, expected_obs, expected_act)
        except PolicyError as e:
            raise refuse(str(e)) from None
        problems = _graph_problems(session, contract)
        if problems:
            raise refuse("graph does not match its contract: " + "; ".join(problems))

        self = object.__new__(cls)
        self._path = path
        self._sha256 = digest
        self._contract = contract
        self._manifest = manifest
        self._session = session
        self._obs_shape = (contract.n_obs,)
        self._obs_in = np.zeros((1, contract.n_obs), dtype=np.float32)
        self._act_out = np.zeros((1, contract.n_act), dtype=np.float32)
        self._obs_row = self._obs_in[0]  # views made once, not per call
        self._act_row = self._act_out[0]
        # The binding holds raw pointers into the two buffers; they live as long as self.
        b = session.io_binding()
        b.bind_input(contract.input_name, "cpu", 0, np.float32, list(self._obs_in.shape), self._obs_in.ctypes.data)
        b.bind_output(contract.output_name, "cpu", 0, np.float32, list(self._act_out.shape), self._act_out.ctypes.data)
        # the uncertainty output, where the contract declares one (NaN stays: no figure)
        self._unc_out = np.full((1, 1), np.nan, dtype=np.float32)
        if contract.uncertainty is not None:
            b.bind_output(contract.uncertainty.output_name, "cpu", 0, np.float32, [1, 1], self._unc_out.ctypes.data)
        self._binding = b

        self._run_options = (stop or WarmupStop()).options
        warm = np.zeros(contract.n_obs) if contract.obs_stats is None else np.asarray(contract.obs_stats.mean)
        try:
            for _ in range(WARMUP_RUNS):
                self.infer(warm)
        except PolicyError as e:
            raise refuse(f"failed during warm-up: {e}") from None
        self._run_options = None  # the cycle's runs: default options (a RunOptions object costs ~40 µs a run)
        return self

    # ------------------------------------------------------------------ run
    def infer(self, obs: np.ndarray) -> np.ndarray:
        """Action for one observation: ``obs`` shape (n_obs,) → (n_act,) float64 (a new array).

        Raises :class:`PolicyError` when onnxruntime fails or the output is not finite
        (the caller falls back or trips), ``ValueError`` when ``obs`` has the wrong shape.
        """
        if obs.shape != self._obs_shape:
            raise ValueError(f"observation has shape {obs.shape}, policy expects {self._obs_shape}")
        self._obs_row[:] = obs
        try:
            self._session.run_with_iobinding(self._binding, self._run_options)
        except Exception as e:
            raise PolicyError(f"policy {self._path.name} failed at run time: {_first_line(e)}") from None
        # per-element isfinite on a short list: cheaper than a numpy reduction, and no
        # RuntimeWarning (an inf·0 would print one into the daemon's log)
        values = self._act_row.tolist()
        if not all(map(math.isfinite, values)):
            raise PolicyError(f"policy {self._path.name} produced a non-finite action {values}")
        return self._act_row.astype(np.float64)

    def infer_batch(self, obs: np.ndarray) -> np.ndarray:
        """Actions for many observations at once ([n, n_obs] float32 → [n, n_act]), off the
        cycle (promotion evidence): the session's own run, not the cycle's binding."""
        c = self._contract
        return np.asarray(self._session.run([c.output_name], {c.input_name: obs.astype(np.float32)})[0])

    @property
    def uncertainty(self) -> float:
        """The last ``infer``'s uncertainty output (in the contract's units), NaN without one.
        A non-finite figure from a model that has one reads as +inf: unknown is unfamiliar."""
        u = float(self._unc_out[0, 0])
        if u != u and self._contract.uncertainty is not None:
            return math.inf
        return u

    # ------------------------------------------------------------------ facts
    @property
    def contract(self) -> PolicyContract:
        return self._contract

    @property
    def sha256(self) -> str:
        """Lower-case hex SHA-256 of the file bytes that were loaded."""
        return self._sha256

    @property
    def path(self) -> Path:
        return self._path

    @property
    def off_policy(self) -> dict[str, Any] | None:
        """The off-policy estimate ``train report`` wrote into the manifest beside the model,
        as it was when the model was loaded (None: none)."""
        found = self._manifest.get("evidence", {})
        found = found.get("off_policy") if isinstance(found, dict) else None
        if not isinstance(found, dict):
            return None
        # its figures only (numbers, flags, short texts): the file is not trusted to size an audit record
        return {str(k)[:64]: (v[:400] if isinstance(v, str) else v) for k, v in list(found.items())[:64]
                if isinstance(v, (str, int, float, bool))}

    @property
    def algorithm(self) -> str:
        return str(self._contract.algorithm)

    def attach(self, last_action: np.ndarray, observations: np.ndarray, period: float) -> None:
        """A model needs only its input (a controller without one reads the last action)."""

    def __repr__(self) -> str:
        c = self._contract
        return f"OnnxPolicy({str(self._path)!r}, sha256={self._sha256[:12]}…, {c.n_obs}→{c.n_act}, {c.algorithm})"


def _graph_problems(session: ort.InferenceSession, c: PolicyContract) -> list[str]:
    problems: list[str] = []
    inputs = session.get_inputs()
    if len(inputs) != 1:
        problems.append(f"expected exactly one input, graph has {[i.name for i in inputs]}")
    elif inputs[0].name != c.input_name:
        problems.append(f"input is named {inputs[0].name!r}, contract says {c.input_name!r}")
    else:
        problems += _io_problems("input", inputs[0], c.n_obs, "observation tags")
    outputs = {o.name: o for o in session.get_outputs()}
    if c.output_name not in outputs:
        problems.append(f"no output named {c.output_name!r} (graph outputs: {sorted(outputs)})")
    else:
        problems += _io_problems("output", outputs[c.output_name], c.n_act, "action tags")
    if c.uncertainty is not None:
        name = c.uncertainty.output_name
        if name not in outputs:
            problems.append(f"no uncertainty output named {name!r} (graph outputs: {sorted(outputs)})")
        else:
            problems += _io_problems("output", outputs[name], 1, "uncertainty figure")
    return problems


def _io_problems(kind: str, arg: ort.NodeArg, n: int, what: str) -> list[str]:
    out = []
    if arg.type != _FLOAT:
        out.append(f"{kind} {arg.name!r} has type {arg.type}, expected {_FLOAT} (float32)")
    shape = arg.shape
    if len(shape) != 2:
        out.append(f"{kind} {arg.name!r} has shape {shape}, expected [batch, {n}]")
    else:
        if not _dim_ok(shape[0], None):
            out.append(f"{kind} {arg.name!r} batch dimension is {shape[0]}, expected dynamic or 1")
        if not _dim_ok(shape[1], n):
            out.append(f"{kind} {arg.name!r} has {shape[1]} features, the contract has {n} {what}")
    return out


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__
