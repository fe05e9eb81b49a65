"""IQL: implicit Q-learning, never querying actions outside the dataset.

Kostrikov, Nair & Levine, "Offline Reinforcement Learning with Implicit Q-Learning",
ICLR 2022 (arXiv:2110.06169), Algorithm 1: (1) fit V to an upper expectile of the target
Q over dataset actions, (2) fit Q to r + gamma V(s'), (3) extract the policy by
advantage-weighted regression, exp(beta (Q - V)) clipped at 100. Defaults are the
paper's locomotion settings: expectile 0.7, inverse temperature beta 3.0, gamma 0.99,
tau 0.005, Adam 3e-4, 256-256 networks, batch 256.

Two policy extractions (``actor``):

* ``gaussian`` (the paper's): a Gaussian policy N(tanh(mu(s)), sigma) with a
  state-independent log sigma in [-5, 2] (a sigmoid of a parameter, as d3rlpy's
  ``NormalPolicy`` with ``use_std_parameter``), trained by the advantage-weighted
  log-likelihood of the dataset's actions; deployed as its mean tanh(mu(s)), so the exported
  graph is the same MLP as the deterministic actor's.
* ``deterministic``: a tanh actor trained by the advantage-weighted squared error (CORL's
  "deterministic" variant; the default before 2026-12-04, and what a checkpoint saved
  without this setting was trained with).

Order within a step (``order``). ``joint``, as in CORL's IQL: all three losses are
computed from the networks as they were at the start of the step (the Q target uses V(s')
before V's update; the advantage uses Q_target and V before their updates), so the three
updates are independent of each other. ``critic_first``, d3rlpy 2.8's: Q and V first, then
the actor with the advantage from the *updated* V, then the target Q (always sequential).
On CPU with two or more intra-op threads, ``joint`` uses its independence:
the V + actor update and the Q update run at the same time on two threads with one
intra-op thread each (``concurrent``; small matrices split poorly across cores, two
independent networks don't). Same operations, same results as the sequential path with one
intra-op thread (tested); data-parallel runs and CUDA use the sequential path.
"""

from __future__ import annotations

import copy
import math
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar, Literal

import torch
from pydantic.dataclasses import dataclass
from torch import nn

from edgewarden.training.algos.params import (CHECKED, BatchSize, Discount, Fraction, Hidden, LearningRate,
                                             NonNegative, Polyak, Positive)
from edgewarden.training.algos.base import Algorithm, adam
from edgewarden.training.nets import Actor, Batch, EnsembleQ, ValueNet, soft_update


@dataclass(config=CHECKED)
class IQLConfig:
    hidden: Hidden = (256, 256)  # actor, critic and value MLP widths
    actor_lr: LearningRate = 3e-4  # Adam learning rate, actor
    critic_lr: LearningRate = 3e-4  # Adam learning rate, Q networks
    value_lr: LearningRate = 3e-4  # Adam learning rate, V network
    batch_size: BatchSize = 256  # transitions per gradient step
    gamma: Discount = 0.99  # discount
    tau: Polyak = 0.005  # target Q Polyak rate
    expectile: Fraction = 0.7  # tau in the paper: expectile of Q that V fits
    beta: NonNegative = 3.0  # inverse temperature of the advantage weights
    exp_adv_max: Positive = 100.0  # weights are clipped to this
    concurrent: bool = True  # on CPU: V + actor and Q updates on two threads at once (same results)
    actor: Literal["gaussian", "deterministic"] = "gaussian"  # policy extraction (module docstring)
    order: Literal["joint", "critic_first"] = "joint"  # within a step (module docstring)

    # settings added since checkpoints were first saved: the value a checkpoint without them used
    SAVED_BEFORE: ClassVar[dict[str, object]] = {"actor": "deterministic", "order": "joint"}


class LogStd(nn.Module):
    """The Gaussian policy's state-independent log sigma, kept in [-5, 2] by a sigmoid."""

    LOW, HIGH = -5.0, 2.0

    def __init__(self, n_act: int) -> None:
        super().__init__()
        self.raw = nn.Parameter(torch.zeros(n_act))

    def forward(self) -> torch.Tensor:
        return self.LOW + torch.sigmoid(self.raw) * (self.HIGH - self.LOW)


class IQL(Algorithm):
    name = "iql"

    def __init__(self, cfg: IQLConfig, n_obs, n_act, obs_mean, obs_std, *, device, seed) -> None:
        super().__init__(cfg, n_obs, n_act, obs_mean, obs_std, device=device, seed=seed)
        self.actor = Actor(self.norm, n_obs, n_act, cfg.hidden).to(self.device)
        self.critic = EnsembleQ(self.norm, n_obs, n_act, cfg.hidden, n=2).to(self.device)
        self.value = ValueNet(self.norm, n_obs, cfg.hidden).to(self.device)
        self.critic_t = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_std = LogStd(n_act).to(self.device) if cfg.actor == "gaussian" else None
        actor_params = list(self.actor.parameters()) + (list(self.log_std.parameters()) if self.log_std else [])
        self.actor_opt = adam(actor_params, cfg.actor_lr, self.device)
        self.critic_opt = adam(self.critic.parameters(), cfg.critic_lr, self.device)
        self.value_opt = adam(self.value.parameters(), cfg.value_lr, self.device)
        self.modules = {"actor": self.actor, "critic": self.critic, "value": self.value,
                        "critic_target": self.critic_t}
        if self.log_std is not None:
            self.modules["actor_log_std"] = self.log_std
        self.optims = {"actor": self.actor_opt, "critic": self.critic_opt, "value": self.value_opt}
        self._pool: ThreadPoolExecutor | None = None

    @torch.no_grad()  # grad mode is per thread: each half of the concurrent path sets its own
    def _q_target(self, obs, act) -> torch.Tensor:
        """min_i Q_target_i(s, a), from the target heads as they are at the step's start."""
        return self.critic_t(obs, act).min(0).values

    @torch.no_grad()
    def _value_next(self, nxt) -> torch.Tensor:
        """V(s') from V as it is at the step's start (the Q target)."""
        return self.value(nxt)

    def _value_loss(self, obs, q_t) -> tuple[torch.Tensor, torch.Tensor]:
        # 1. Value: expectile regression  L_V = E[ |tau - 1(u < 0)| u^2 ],  u = Q_target(s,a) - V(s)
        u = q_t - self.dp(self.value)(obs)
        w = torch.where(u < 0, 1.0 - self.cfg.expectile, self.cfg.expectile)
        return (w * u.pow(2)).mean(), u

    def _value_actor_loss(self, obs, act, q_t) -> tuple[torch.Tensor, torch.Tensor]:
        value_loss, u = self._value_loss(obs, q_t)
        return value_loss, self._actor_loss(obs, act, u.detach())

    def _actor_loss(self, obs, act, adv) -> torch.Tensor:
        c = self.cfg
        # 3. Policy extraction (AWR): weights exp(beta (Q_target - V)), clipped.
        weight = torch.exp(c.beta * adv).clamp_max(c.exp_adv_max)
        mean = self.dp(self.actor)(obs)
        if self.log_std is None:  # weighted squared error
            return (weight * (mean - act).pow(2).sum(-1)).mean()
        # weighted negative log-likelihood of the dataset action under N(mean, sigma)
        log_std = self.log_std()
        z = (act - mean) * torch.exp(-log_std)
        log_prob = (-0.5 * z.pow(2) - log_std).sum(-1) - 0.5 * math.log(2 * math.pi) * act.shape[-1]
        return -(weight * log_prob).mean()

    def _critic_loss(self, obs, act, rew, done, next_v) -> torch.Tensor:
        # 2. Q: L_Q = E[ (r + gamma (1-d) V(s') - Q(s,a))^2 ] on both heads
        y = rew + self.cfg.gamma * (1.0 - done) * next_v
        return (self.dp(self.critic)(obs, act) - y).pow(2).mean(1).sum()

    def _value_actor_step(self, b: Batch, q_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        value_loss, actor_loss = self._value_actor_loss(b.obs, b.act, q_t)
        self.value_opt.zero_grad(set_to_none=True)
        self.actor_opt.zero_grad(set_to_none=True)
        # one backward for both: the losses share no parameters (the advantage is detached),
        # so each network gets exactly its own loss's gradient
        (value_loss + actor_loss).backward()
        self.value_opt.step()
        self.actor_opt.step()
        return value_loss.detach(), actor_loss.detach()

    def _critic_first(self, b: Batch) -> dict[str, torch.Tensor]:
        """d3rlpy's order: V and Q from the step's starting networks, then the actor with the
        advantage from the updated V (and the target Q as it was, updated last)."""
        q_t, next_v = self._q_target(b.obs, b.act), self._value_next(b.next_obs)
        value_loss, _ = self._value_loss(b.obs, q_t)
        self.value_opt.zero_grad(set_to_none=True)
        value_loss.backward()
        self.value_opt.step()
        critic_loss = self._critic_step(b, next_v)
        with torch.no_grad():
            adv = q_t - self.value(b.obs)
        actor_loss = self._actor_loss(b.obs, b.act, adv)
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        return {"value_loss": value_loss.detach(), "critic_loss": critic_loss, "actor_loss": actor_loss.detach()}

    def _critic_step(self, b: Batch, next_v: torch.Tensor) -> torch.Tensor:
        critic_loss = self._critic_loss(b.obs, b.act, b.rew, b.done, next_v)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        soft_update(self.critic_t, self.critic, self.cfg.tau)
        return critic_loss.detach()

    def _worker(self) -> ThreadPoolExecutor | None:
        """The second thread of the concurrent path, or None where the sequential path runs."""
        if (not self.cfg.concurrent or self.device.type != "cpu" or self._dp
                or torch.get_num_threads() < 2):
            return None
        if self._pool is None:
            # one intra-op thread in the worker (a per-thread setting in torch's OpenMP backend)
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="iql", initializer=torch.set_num_threads,
                                            initargs=(1,))
        return self._pool

    def update(self, b: Batch) -> dict[str, torch.Tensor]:
        self.step += 1
        if self.cfg.order == "critic_first":
            return self._critic_first(b)
        pool = self._worker()
        if pool is None:
            q_t, next_v = self._q_target(b.obs, b.act), self._value_next(b.next_obs)
            value_loss, actor_loss = self._value_actor_step(b, q_t)
            critic_loss = self._critic_step(b, next_v)
        else:
            n = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                f = pool.submit(self._value_next, b.next_obs)
                q_t = self._q_target(b.obs, b.act)
                next_v = f.result()
                f = pool.submit(self._value_actor_step, b, q_t)
                try:
                    critic_loss = self._critic_step(b, next_v)
                finally:  # never leave the worker running past update
                    value_loss, actor_loss = f.result()
            finally:
                torch.set_num_threads(n)
        return {"value_loss": value_loss, "critic_loss": critic_loss, "actor_loss": actor_loss}

    def __getstate__(self):  # the worker thread is not state
        d = dict(self.__dict__)
        d["_pool"] = None
        return d
