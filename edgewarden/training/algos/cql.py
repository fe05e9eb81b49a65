"""CQL: conservative Q-learning on top of SAC.

Kumar, Zhou, Tucker & Levine, "Conservative Q-Learning for Offline Reinforcement
Learning", NeurIPS 2020 (arXiv:2006.04779): CQL(H), Eq. 4 with the importance-sampled
log-sum-exp of Appendix F (uniform actions and policy actions at s and s'). Order per
step: (1) SAC entropy temperature, (2) actor (SAC objective), (3) critic = TD error +
alpha_cql (logsumexp_a Q(s, a) - Q(s, a_data)), (4) target update. Defaults follow the
paper's Gym settings: alpha_cql 5.0, 10 sampled actions, policy lr 1e-4, Q lr 3e-4,
gamma 0.99, tau 0.005, automatic entropy tuning with target -|A|, 256-256 networks.
The paper's BC warm-up (``bc_steps``) is a config field, off by default for short runs.
"""

from __future__ import annotations

import copy
import math
from pydantic.dataclasses import dataclass

import torch
from torch import nn

from edgewarden.training.algos.params import CHECKED, BatchSize, Count, Discount, Hidden, LearningRate, NonNegative, Polyak, Positive, Steps
from edgewarden.training.algos.base import Algorithm, adam
from edgewarden.training.nets import Batch, EnsembleQ, GaussianActor, soft_update


@dataclass(config=CHECKED)
class CQLConfig:
    hidden: Hidden = (256, 256)  # actor and critic MLP widths
    actor_lr: LearningRate = 1e-4  # Adam learning rate, policy
    critic_lr: LearningRate = 3e-4  # Adam learning rate, Q networks
    alpha_lr: LearningRate = 3e-4  # Adam learning rate, SAC temperature
    batch_size: BatchSize = 256  # transitions per gradient step
    gamma: Discount = 0.99  # discount
    tau: Polyak = 0.005  # target Q Polyak rate
    cql_alpha: NonNegative = 5.0  # weight of the conservative penalty
    n_actions: Count = 10  # sampled actions per state for the log-sum-exp
    temperature: Positive = 1.0  # log-sum-exp temperature
    bc_steps: Steps = 0  # steps of BC (log-likelihood) actor loss before the SAC loss


class Temperature(nn.Module):
    """SAC's log entropy temperature as a module (checkpointed; DDP averages its gradient)."""

    def __init__(self) -> None:
        super().__init__()
        self.log_alpha = nn.Parameter(torch.zeros(1))

    def forward(self) -> torch.Tensor:
        return self.log_alpha


class CQL(Algorithm):
    name = "cql"

    def __init__(self, cfg: CQLConfig, n_obs, n_act, obs_mean, obs_std, *, device, seed) -> None:
        super().__init__(cfg, n_obs, n_act, obs_mean, obs_std, device=device, seed=seed)
        self.actor = GaussianActor(self.norm, n_obs, n_act, cfg.hidden).to(self.device)
        self.critic = EnsembleQ(self.norm, n_obs, n_act, cfg.hidden, n=2).to(self.device)
        self.critic_t = copy.deepcopy(self.critic).requires_grad_(False)
        self.target_entropy = -float(n_act)
        self.temperature = Temperature().to(self.device)
        self.log_alpha = self.temperature.log_alpha
        self.actor_opt = adam(self.actor.parameters(), cfg.actor_lr, self.device)
        self.critic_opt = adam(self.critic.parameters(), cfg.critic_lr, self.device)
        self.alpha_opt = adam([self.log_alpha], cfg.alpha_lr, self.device)
        self.modules = {"actor": self.actor, "critic": self.critic, "critic_target": self.critic_t,
                        "alpha": self.temperature}
        self.optims = {"actor": self.actor_opt, "critic": self.critic_opt, "alpha": self.alpha_opt}

    def _repeat(self, x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(self.cfg.n_actions, dim=0)

    def update(self, b: Batch) -> dict[str, torch.Tensor]:
        c = self.cfg
        self.step += 1
        bs, na = b.obs.shape[0], c.n_actions
        # 1. Temperature: min_alpha E[ -alpha (log pi(a|s) + target_entropy) ]
        pi, logp = self.dp(self.actor)(b.obs, sample=True, generator=self.gen)
        alpha_loss = -(self.dp(self.temperature)() * (logp.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()
        alpha = self.log_alpha.exp().detach()
        # 2. Actor: SAC  E[ alpha log pi(a|s) - min Q(s, a) ]  (or BC log-likelihood while warming up)
        if self.step <= c.bc_steps:
            actor_loss = (alpha * logp + (pi - b.act).pow(2).sum(-1)).mean()
        else:
            actor_loss = (alpha * logp - self.critic(b.obs, pi, detach_params=True).min(0).values).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        # 3. Critic: TD error (SAC target) + conservative penalty.
        with torch.no_grad():
            a2, logp2 = self.actor.sample(b.next_obs, self.gen)
            y = b.rew + c.gamma * (1.0 - b.done) * (torch.min(*self.critic_t(b.next_obs, a2)) - alpha * logp2)
        q1, q2 = self.dp(self.critic)(b.obs, b.act)
        td = (q1 - y).pow(2).mean() + (q2 - y).pow(2).mean()
        with torch.no_grad():
            rep_o, rep_no = self._repeat(b.obs), self._repeat(b.next_obs)
            a_rand = torch.rand((bs * na, self.n_act), generator=self.gen, device=self.device) * 2 - 1
            a_cur, lp_cur = self.actor.sample(rep_o, self.gen)
            a_nxt, lp_nxt = self.actor.sample(rep_no, self.gen)
        log_unif = self.n_act * math.log(0.5)  # density of U[-1, 1]^|A|
        # One critic pass over all 3 x n_actions sampled actions per state, both heads.
        qs = self.dp(self.critic)(torch.cat([rep_o, rep_o, rep_o]), torch.cat([a_rand, a_cur, a_nxt]))
        correction = torch.cat([torch.full_like(lp_cur, log_unif), lp_cur, lp_nxt])
        penalty = torch.zeros((), device=self.device)
        for q_all, q_data in zip(qs, (q1, q2), strict=True):
            # (3, bs, na) → (bs, 3 na): importance-sampled log-sum-exp per state
            z = (q_all - correction).view(3, bs, na).permute(1, 0, 2).reshape(bs, 3 * na)
            lse = torch.logsumexp(z / c.temperature, dim=1) * c.temperature
            penalty = penalty + (lse - q_data).mean()
        critic_loss = td + c.cql_alpha * penalty
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        # 4. Target.
        soft_update(self.critic_t, self.critic, c.tau)
        return {"alpha": alpha.detach(), "actor_loss": actor_loss.detach(), "critic_td": td.detach(),
                "cql_penalty": penalty.detach(), "critic_loss": critic_loss.detach()}
