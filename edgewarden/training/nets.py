"""Shared pieces every algorithm uses: networks, observation/action scaling, replay sampling.

Conventions (all algorithms):

* Observations enter the networks normalised, ``(obs - mean) * inv_std``, with the
  statistics of the training dataset held in an :class:`ObsNormalizer` *inside* the
  actor, so the exported graph carries them.
* Actions are handled in ``[-1, 1]`` (the dataset's engineering units mapped linearly
  from ``[low, high]``); the actor ends in ``tanh`` and the export adds the affine map
  back to engineering units, so training and deployment see the same function.
* Replay sampling is uniform over the whole dataset, on the training device, from a
  seeded ``torch.Generator``: the same seed gives the same batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from edgewarden.training.datasets import Dataset

__all__ = ["Actor", "Batch", "EnsembleQ", "GaussianActor", "ObsNormalizer", "Replay", "mlp", "soft_update"]


def mlp(n_in: int, hidden: Sequence[int], n_out: int) -> nn.Sequential:
    """Linear → ReLU → ... → Linear (no activation on the output).

    The ReLUs work in place on the Linear's fresh output (a Linear's backward needs its
    input, not its output), which saves an allocation and a pass over memory per layer."""
    layers: list[nn.Module] = []
    w = n_in
    for h in hidden:
        layers += [nn.Linear(w, h), nn.ReLU(inplace=True)]
        w = h
    layers.append(nn.Linear(w, n_out))
    return nn.Sequential(*layers)


class ObsNormalizer(nn.Module):
    """``(obs - mean) * inv_std`` with buffers (saved in checkpoints, traced into export)."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, eps: float = 1e-3) -> None:
        super().__init__()
        std = np.maximum(np.asarray(std, np.float64), eps)
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean, np.float32)))
        self.register_buffer("inv_std", torch.as_tensor((1.0 / std).astype(np.float32)))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.mean) * self.inv_std


class Actor(nn.Module):
    """Deterministic actor: normalise → MLP → tanh, output in [-1, 1] (BC, TD3+BC, IQL)."""

    def __init__(self, norm: ObsNormalizer, n_obs: int, n_act: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.norm = norm
        self.net = mlp(n_obs, hidden, n_act)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(self.norm(obs)))

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        return self(obs)

    def export_layers(self) -> list[nn.Linear]:
        return [m for m in self.net if isinstance(m, nn.Linear)]


class GaussianActor(nn.Module):
    """Tanh-squashed Gaussian actor (SAC, used by CQL); deployed as ``tanh(mean)``."""

    LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0

    def __init__(self, norm: ObsNormalizer, n_obs: int, n_act: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.norm = norm
        self.trunk = mlp(n_obs, hidden[:-1], hidden[-1])
        self.mean = nn.Linear(hidden[-1], n_act)
        self.log_std = nn.Linear(hidden[-1], n_act)

    def _h(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.trunk(self.norm(obs)))

    def sample(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised action in [-1, 1] and its log-probability (tanh-corrected)."""
        h = self._h(obs)
        mu = self.mean(h)
        log_std = self.log_std(h).clamp(self.LOG_STD_MIN, self.LOG_STD_MAX)
        std = log_std.exp()
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        pre = mu + std * eps
        a = torch.tanh(pre)
        logp = (-0.5 * eps.pow(2) - log_std - 0.5 * np.log(2 * np.pi)).sum(-1)
        logp = logp - (2 * (np.log(2.0) - pre - nn.functional.softplus(-2 * pre))).sum(-1)
        return a, logp

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.mean(self._h(obs)))

    def forward(self, obs: torch.Tensor, *, sample: bool = False,
                generator: torch.Generator | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The deterministic action, or with ``sample`` a sampled action and its
        log-probability (a keyword of ``forward`` so a DDP wrapper sees the sampling pass)."""
        return self.sample(obs, generator) if sample else self.deterministic(obs)

    def export_layers(self) -> list[nn.Linear]:
        return [m for m in self.trunk if isinstance(m, nn.Linear)] + [self.mean]


class EnsembleQ(nn.Module):
    """``n`` Q(s, a) heads (2 for the clipped double-Q of TD3/SAC) computed as one batched MLP.

    Each layer holds the heads' weights stacked, ``(n, in, out)``, so one forward is one
    matmul per layer (``baddbmm``) instead of one per head and layer, and one optimiser
    step touches ``2 * layers`` tensors instead of ``2 * layers * n``. Each head is
    initialised as its own ``nn.Linear`` would be (uniform in ±1/sqrt(fan_in)).
    ``forward`` returns shape ``(n, batch)``, so ``q1, q2 = critic(s, a)`` and
    ``critic(s, a).min(0).values`` both read naturally.
    """

    def __init__(self, norm: ObsNormalizer, n_obs: int, n_act: int, hidden: Sequence[int], n: int = 2) -> None:
        super().__init__()
        self.norm = norm
        self.n = n
        sizes = [n_obs + n_act, *hidden, 1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            bound = 1.0 / np.sqrt(fan_in)
            self.weights.append(nn.Parameter(torch.empty(n, fan_in, fan_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(n, 1, fan_out).uniform_(-bound, bound)))

    def _params(self, detach: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        ws, bs = list(self.weights), list(self.biases)
        if detach:
            ws, bs = [w.detach() for w in ws], [b.detach() for b in bs]
        return ws, bs

    def forward(self, obs: torch.Tensor, act: torch.Tensor, *, detach_params: bool = False) -> torch.Tensor:
        """All heads, shape ``(n, batch)``. ``detach_params``: gradients reach the inputs
        (an actor's action) but not the heads' weights (actor losses)."""
        x = torch.cat([self.norm(obs), act], dim=-1)
        ws, bs = self._params(detach_params)
        # Every head reads the same input: a stride-0 expand, no copy.
        h = torch.baddbmm(bs[0], x.expand(self.n, *x.shape), ws[0])
        for w, b in zip(ws[1:-1], bs[1:-1], strict=True):
            h = torch.baddbmm(b, h.relu_(), w)  # in place: baddbmm's backward needs its inputs, not its output
        # The output layer has one unit: a weighted sum over the last hidden layer, cheaper
        # on CPU than a (batch, hidden) @ (hidden, 1) matrix-vector product per head.
        # (a view, not a transpose: its gradient keeps the weight's own strides, which DDP's
        # gradient buckets need to avoid a copy and a warning per rank)
        w, b = ws[-1], bs[-1]
        return (h.relu_() * w.view(self.n, 1, -1)).sum(-1) + b.view(self.n, 1)

    def head(self, i: int, obs: torch.Tensor, act: torch.Tensor, *, detach_params: bool = False) -> torch.Tensor:
        """Q of head ``i`` alone, shape ``(batch,)``. ``detach_params``: gradients reach the
        inputs (the actor's action) but not the heads' weights (TD3's actor loss)."""
        h = torch.cat([self.norm(obs), act], dim=-1)
        ws, bs = self._params(detach_params)
        for w, b in zip(ws[:-1], bs[:-1], strict=True):
            h = torch.addmm(b[i], h, w[i]).relu_()
        return (h * ws[-1][i].view(1, -1)).sum(-1) + bs[-1][i].view(1)


class ValueNet(nn.Module):
    """V(s) on normalised observations (IQL)."""

    def __init__(self, norm: ObsNormalizer, n_obs: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.norm = norm
        self.v = mlp(n_obs, hidden, 1)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.v(self.norm(obs)).squeeze(-1)


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging, in place: target ← (1 − tau) target + tau source."""
    tp = [p for p in target.parameters()]
    sp = [p for p in source.parameters()]
    torch._foreach_lerp_(tp, sp, tau)


@dataclass
class Batch:
    obs: torch.Tensor
    act: torch.Tensor  # in [-1, 1]
    rew: torch.Tensor
    next_obs: torch.Tensor
    done: torch.Tensor  # 1.0 at a terminal (not at a timeout)


class Replay:
    """The dataset on the device, actions scaled to [-1, 1]; seeded uniform sampling."""

    def __init__(self, ds: Dataset, device: torch.device, seed: int, reward_scale: float = 1.0) -> None:
        lo = np.asarray(ds.meta.action_low, np.float32)
        hi = np.asarray(ds.meta.action_high, np.float32)
        self.act_mid = (hi + lo) / 2
        self.act_half = np.maximum((hi - lo) / 2, 1e-6)
        act = np.clip((ds.actions - self.act_mid) / self.act_half, -1.0, 1.0)
        # One (n, obs + act + 1 + obs + 1) table: a batch is one gather, then column views.
        table = np.concatenate([ds.observations, act, (ds.rewards * reward_scale)[:, None], ds.next_observations,
                                np.asarray(ds.terminals, np.float32)[:, None]], axis=1)
        self.table = torch.as_tensor(np.ascontiguousarray(table, dtype=np.float32), device=device)
        o, a = ds.meta.n_obs, ds.meta.n_act
        self._cols = (o, a, 1, o, 1)
        self.n = len(ds)
        self.device = device
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(seed)

    def sample(self, batch_size: int) -> Batch:
        idx = torch.randint(0, self.n, (batch_size,), generator=self.gen, device=self.device)
        obs, act, rew, nxt, done = self.table.index_select(0, idx).split(self._cols, dim=1)
        return Batch(obs, act, rew.squeeze(1), nxt, done.squeeze(1))


def obs_stats(ds: Dataset) -> dict[str, np.ndarray]:
    o = ds.observations.astype(np.float64)
    return {"mean": o.mean(0), "std": o.std(0), "min": o.min(0), "max": o.max(0)}
