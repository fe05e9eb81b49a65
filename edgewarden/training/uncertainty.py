"""How unfamiliar a policy finds a state: the spread of its critic ensemble, calibrated on its data.

The figure is ``max_i Q_i(s, π(s)) − min_i Q_i(s, π(s))`` over the critic's heads. The
heads are trained on the same transitions from different initialisations: where the data
shows the state and the action, they agree; away from it each extrapolates on its own and
they part. ``fit`` calibrates it on the training dataset's states (:func:`calibrate`, kept
in the checkpoint); ``export`` divides by the 99.9th percentile, so the exported output
reads 1.0 at the data's own 99.9th percentile, and declares a threshold (``THRESHOLD``
times that) in the model contract, above which the gateway counts the input as out of
distribution and, after ``ood_cycles`` such cycles, hands over to the fallback controller.

Algorithms without a critic ensemble (BC) have no figure; their exports carry none.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from edgewarden.training.nets import EnsembleQ

__all__ = ["METHOD", "THRESHOLD", "calibrate", "figure"]

METHOD = "critic_disagreement"
THRESHOLD = 5.0  # in units of the data's 99.9th percentile (docs/training.md: how it was chosen)
MAX_STATES = 100_000  # a seeded sample of larger datasets
_CHUNK = 8192


def critic_of(algo: Any) -> EnsembleQ | None:
    """The algorithm's critic ensemble (two or more heads), or None."""
    critic = getattr(algo, "critic", None)
    return critic if isinstance(critic, EnsembleQ) and critic.n >= 2 else None


@torch.no_grad()
def figure(algo: Any, obs: np.ndarray) -> np.ndarray | None:
    """The raw figure for each row of ``obs`` (engineering units), or None without a critic ensemble."""
    critic = critic_of(algo)
    if critic is None:
        return None
    out = []
    for s in range(0, len(obs), _CHUNK):
        o = torch.as_tensor(np.asarray(obs[s:s + _CHUNK], np.float32), device=algo.device)
        q = critic(o, algo.actor.deterministic(o))
        out.append((q.max(0).values - q.min(0).values).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def calibrate(algo: Any, observations: np.ndarray, seed: int = 0) -> dict[str, Any] | None:
    """The figure's distribution over the dataset's states (a seeded sample of at most
    ``MAX_STATES``), for the checkpoint; None without a critic ensemble."""
    obs = observations
    if len(obs) > MAX_STATES:
        obs = obs[np.sort(np.random.default_rng(seed).choice(len(obs), MAX_STATES, replace=False))]
    f = figure(algo, obs)
    if f is None or f.size == 0:
        return None
    f = f.astype(np.float64)
    p50, p99, p999 = (float(v) for v in np.quantile(f, (0.5, 0.99, 0.999)))
    return {"method": METHOD, "heads": critic_of(algo).n, "states": int(f.size), "p50": p50, "p99": p99,
            "p999": p999, "max": float(f.max())}
