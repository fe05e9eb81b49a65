"""Behaviour cloning: regress the dataset's actions from its observations.

Pomerleau, "ALVINN: An Autonomous Land Vehicle in a Neural Network", NIPS 1988; here in the
form used as the offline-RL baseline (e.g. Fujimoto & Gu 2021, Tarasov et al. "CORL" 2022):
a deterministic tanh actor minimising the mean squared error to the logged action.
"""

from __future__ import annotations

from pydantic.dataclasses import dataclass

import torch

from edgewarden.training.algos.params import CHECKED, BatchSize, Hidden, LearningRate
from edgewarden.training.algos.base import Algorithm, adam
from edgewarden.training.nets import Actor, Batch


@dataclass(config=CHECKED)
class BCConfig:
    hidden: Hidden = (256, 256)  # actor MLP widths
    lr: LearningRate = 3e-4  # Adam learning rate
    batch_size: BatchSize = 256  # transitions per gradient step


class BC(Algorithm):
    name = "bc"

    def __init__(self, cfg: BCConfig, n_obs, n_act, obs_mean, obs_std, *, device, seed) -> None:
        super().__init__(cfg, n_obs, n_act, obs_mean, obs_std, device=device, seed=seed)
        self.actor = Actor(self.norm, n_obs, n_act, cfg.hidden).to(self.device)
        self.opt = adam(self.actor.parameters(), cfg.lr, self.device)
        self.modules = {"actor": self.actor}
        self.optims = {"actor": self.opt}

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        # min_pi E_(s,a)~D [ (pi(s) - a)^2 ]
        loss = (self.dp(self.actor)(batch.obs) - batch.act).pow(2).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step += 1
        return {"actor_loss": loss.detach()}
