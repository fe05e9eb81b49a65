"""IQL: implicit Q-learning, never querying actions outside the dataset.

Kostrikov, Nair & Levine, "Offline Reinforcement Learning with Implicit Q-Learning",
ICLR 2022 (arXiv:2110.06169), Algorithm 1: (1) fit V to an upper expectile of the target
Q over dataset actions, (2) fit Q to r + gamma V(s'), (3) extract the policy by
advantage-weighted regression, exp(beta (Q - V)) clipped at 100. Defaults are the
paper's locomotion settings: expectile 0.7, inverse temperature beta 3.0, gamma 0.99,
tau 0.005, Adam 3e-4, 256-256 networks, batch 256.

One deviation, stated: the policy is deterministic (a tanh actor) and the AWR term is a
weighted squared error rather than a Gaussian log-likelihood, the "deterministic" IQL
variant of CORL; the gateway deploys a deterministic policy anyway.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from training.algos.base import Algorithm, adam
from training.nets import Actor, Batch, EnsembleQ, ValueNet, soft_update


@dataclass
class IQLConfig:
    hidden: tuple[int, ...] = (256, 256)  # actor, critic and value MLP widths
    actor_lr: float = 3e-4  # Adam learning rate, actor
    critic_lr: float = 3e-4  # Adam learning rate, Q networks
    value_lr: float = 3e-4  # Adam learning rate, V network
    batch_size: int = 256  # transitions per gradient step
    gamma: float = 0.99  # discount
    tau: float = 0.005  # target Q Polyak rate
    expectile: float = 0.7  # tau in the paper: expectile of Q that V fits
    beta: float = 3.0  # inverse temperature of the advantage weights
    exp_adv_max: float = 100.0  # weights are clipped to this


class IQL(Algorithm):
    name = "iql"

    def __init__(self, cfg: IQLConfig, n_obs, n_act, obs_mean, obs_std, *, device, seed) -> None:
        super().__init__(cfg, n_obs, n_act, obs_mean, obs_std, device=device, seed=seed)
        self.actor = Actor(self.norm, n_obs, n_act, cfg.hidden).to(self.device)
        self.critic = EnsembleQ(self.norm, n_obs, n_act, cfg.hidden, n=2).to(self.device)
        self.value = ValueNet(self.norm, n_obs, cfg.hidden).to(self.device)
        self.critic_t = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = adam(self.actor.parameters(), cfg.actor_lr, self.device)
        self.critic_opt = adam(self.critic.parameters(), cfg.critic_lr, self.device)
        self.value_opt = adam(self.value.parameters(), cfg.value_lr, self.device)
        self.modules = {"actor": self.actor, "critic": self.critic, "value": self.value,
                        "critic_target": self.critic_t}
        self.optims = {"actor": self.actor_opt, "critic": self.critic_opt, "value": self.value_opt}

    def update(self, b: Batch) -> dict[str, torch.Tensor]:
        c = self.cfg
        self.step += 1
        # 1. Value: expectile regression  L_V = E[ |tau - 1(u < 0)| u^2 ],  u = Q_target(s,a) - V(s)
        with torch.no_grad():
            q_t = torch.min(*self.critic_t(b.obs, b.act))
        v = self.dp(self.value)(b.obs)
        u = q_t - v
        w = torch.where(u < 0, 1.0 - c.expectile, c.expectile)
        value_loss = (w * u.pow(2)).mean()
        self.value_opt.zero_grad(set_to_none=True)
        value_loss.backward()
        self.value_opt.step()
        # 2. Q: L_Q = E[ (r + gamma (1-d) V(s') - Q(s,a))^2 ] on both heads
        with torch.no_grad():
            y = b.rew + c.gamma * (1.0 - b.done) * self.value(b.next_obs)
        q1, q2 = self.dp(self.critic)(b.obs, b.act)
        critic_loss = (q1 - y).pow(2).mean() + (q2 - y).pow(2).mean()
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        soft_update(self.critic_t, self.critic, c.tau)
        # 3. Policy extraction (AWR): weights exp(beta (Q_target - V)), clipped.
        with torch.no_grad():
            weight = torch.exp(c.beta * (q_t - v.detach())).clamp_max(c.exp_adv_max)
        actor_loss = (weight * (self.dp(self.actor)(b.obs) - b.act).pow(2).sum(-1)).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        return {"value_loss": value_loss.detach(), "critic_loss": critic_loss.detach(),
                "actor_loss": actor_loss.detach()}
