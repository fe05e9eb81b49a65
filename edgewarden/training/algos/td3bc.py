"""TD3+BC: TD3 with a behaviour-cloning term in the actor loss.

Fujimoto & Gu, "A Minimalist Approach to Offline Reinforcement Learning", NeurIPS 2021
(arXiv:2106.06860), Algorithm 1. Defaults are the paper's (Table 6): alpha 2.5, policy
noise 0.2 clipped at 0.5, delayed actor updates every 2 critic updates, tau 0.005,
gamma 0.99, Adam 3e-4, 256-256 networks, batch 256. Observations are normalised with
the dataset's statistics (the paper's state normalisation), inside the networks.
"""

from __future__ import annotations

import copy
from pydantic.dataclasses import dataclass

import torch

from edgewarden.training.algos.params import CHECKED, BatchSize, Count, Discount, Hidden, LearningRate, NonNegative, Polyak
from edgewarden.training.algos.base import Algorithm, adam
from edgewarden.training.nets import Actor, Batch, EnsembleQ, soft_update


@dataclass(config=CHECKED)
class TD3BCConfig:
    hidden: Hidden = (256, 256)  # actor and critic MLP widths
    actor_lr: LearningRate = 3e-4  # Adam learning rate, actor
    critic_lr: LearningRate = 3e-4  # Adam learning rate, critics
    batch_size: BatchSize = 256  # transitions per gradient step
    gamma: Discount = 0.99  # discount
    tau: Polyak = 0.005  # target network Polyak rate
    policy_noise: NonNegative = 0.2  # target policy smoothing noise (std, in [-1, 1] action units)
    noise_clip: NonNegative = 0.5  # ... clipped to this
    policy_freq: Count = 2  # actor and targets update every this many critic updates
    alpha: NonNegative = 2.5  # lambda = alpha / mean|Q|: weight of the RL term against BC


class TD3BC(Algorithm):
    name = "td3bc"

    def __init__(self, cfg: TD3BCConfig, n_obs, n_act, obs_mean, obs_std, *, device, seed) -> None:
        super().__init__(cfg, n_obs, n_act, obs_mean, obs_std, device=device, seed=seed)
        self.actor = Actor(self.norm, n_obs, n_act, cfg.hidden).to(self.device)
        self.critic = EnsembleQ(self.norm, n_obs, n_act, cfg.hidden, n=2).to(self.device)
        self.actor_t = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_t = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = adam(self.actor.net.parameters(), cfg.actor_lr, self.device)
        self.critic_opt = adam(self.critic.parameters(), cfg.critic_lr, self.device)
        self.modules = {"actor": self.actor, "critic": self.critic,
                        "actor_target": self.actor_t, "critic_target": self.critic_t}
        self.optims = {"actor": self.actor_opt, "critic": self.critic_opt}

    def update(self, b: Batch) -> dict[str, torch.Tensor]:
        c = self.cfg
        self.step += 1
        # 1. Target with policy smoothing: y = r + gamma (1-d) min_i Q'_i(s', clip(pi'(s') + eps))
        with torch.no_grad():
            noise = (torch.randn(b.act.shape, generator=self.gen, device=self.device) * c.policy_noise
                     ).clamp_(-c.noise_clip, c.noise_clip)
            a2 = (self.actor_t(b.next_obs) + noise).clamp_(-1.0, 1.0)
            y = b.rew + c.gamma * (1.0 - b.done) * self.critic_t(b.next_obs, a2).min(0).values
        # 2. Critic regression on both heads (one batched pass): sum_i E[(Q_i(s, a) - y)^2].
        critic_loss = (self.dp(self.critic)(b.obs, b.act) - y).pow(2).mean(1).sum()
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        out = {"critic_loss": critic_loss.detach()}
        # 3. Delayed actor: max_pi  lambda Q1(s, pi(s)) - (pi(s) - a)^2, lambda = alpha / mean|Q|.
        #    Gradients reach the actor through Q1's input only, never the critic's weights.
        if self.step % c.policy_freq == 0:
            pi = self.dp(self.actor)(b.obs)
            q = self.critic.head(0, b.obs, pi, detach_params=True)
            lmbda = c.alpha / q.abs().mean().detach().clamp_min(1e-6)
            bc = (pi - b.act).pow(2).mean()
            actor_loss = -lmbda * q.mean() + bc
            self.actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()
            self.actor_opt.step()
            # 4. Targets.
            soft_update(self.critic_t, self.critic, c.tau)
            soft_update(self.actor_t, self.actor, c.tau)
            out |= {"actor_loss": actor_loss.detach(), "bc_loss": bc.detach()}
        return out
