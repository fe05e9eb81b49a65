"""What every algorithm provides, and the bookkeeping they share (modules, optimisers, RNG)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch import nn

from edgewarden.training.nets import Batch, ObsNormalizer

__all__ = ["Algorithm", "adam"]


class _FusedAdam(torch.optim.Adam):
    """torch's fused Adam with a short path for the one case the algorithms use.

    ``torch.optim.Adam.step`` spends tens of µs per call in Python (grouping tensors by
    device and dtype, flag checks) around one fused kernel; a gradient step here calls it up
    to three times. When the state exists and nothing unusual is asked for (one parameter
    group, every gradient present, no amsgrad, weight decay, maximize, capturable or
    differentiable, a float learning rate, no step hooks), ``step`` issues exactly the
    calls ``torch.optim.adam._fused_adam`` would (``_foreach_add_`` on the step counters,
    then ``_fused_adam_``), so the arithmetic and the state are the same bit for bit
    (tested against ``torch.optim.Adam``); anything else goes through ``Adam.step``.
    """

    def _fast_lists(self):
        from torch.optim import optimizer as O

        if (len(self.param_groups) != 1 or self._optimizer_step_pre_hooks or self._optimizer_step_post_hooks
                or O._global_optimizer_pre_hooks or O._global_optimizer_post_hooks):
            return None
        g = self.param_groups[0]
        if (not g["fused"] or g["amsgrad"] or g["weight_decay"] or g["maximize"] or g["capturable"]
                or g["differentiable"] or g.get("decoupled_weight_decay", False) or not isinstance(g["lr"], float)
                or isinstance(g["betas"][0], torch.Tensor) or getattr(self, "grad_scale", None) is not None
                or getattr(self, "found_inf", None) is not None):
            return None
        params, grads, avgs, sqs, steps = g["params"], [], [], [], []
        for p in params:
            st = self.state.get(p)
            if p.grad is None or not st or p.grad.is_sparse:
                return None
            grads.append(p.grad)
            avgs.append(st["exp_avg"])
            sqs.append(st["exp_avg_sq"])
            steps.append(st["step"])
        return g, params, grads, avgs, sqs, steps

    def step(self, closure=None):  # type: ignore[override]
        fast = self._fast_lists() if closure is None else None
        if fast is None:
            return super().step(closure)
        g, params, grads, avgs, sqs, steps = fast
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(params, grads, avgs, sqs, [], steps, lr=g["lr"], beta1=g["betas"][0],
                           beta2=g["betas"][1], weight_decay=0.0, eps=g["eps"], amsgrad=False, maximize=False)
        return None

    def zero_grad(self, set_to_none: bool = True) -> None:
        if not set_to_none:
            return super().zero_grad(set_to_none)
        for g in self.param_groups:
            for p in g["params"]:
                p.grad = None


def adam(params, lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam with the fused kernel (one pass over all tensors; CPU and CUDA), else foreach."""
    if device.type in ("cpu", "cuda"):
        return _FusedAdam(params, lr=lr, fused=True)
    return torch.optim.Adam(params, lr=lr, foreach=True)


class Algorithm:
    """Base: subclasses set ``name``, build their modules in ``__init__`` and implement ``update``.

    ``self.modules`` and ``self.optims`` (name → object) are what a checkpoint saves;
    ``self.gen`` is the algorithm's own seeded generator (exploration noise, sampled
    actions), saved too, so a resumed run continues the same random stream.
    """

    name = "base"

    def __init__(self, cfg: Any, n_obs: int, n_act: int, obs_mean: np.ndarray, obs_std: np.ndarray,
                 *, device: torch.device | str, seed: int) -> None:
        self.cfg = cfg
        self.n_obs, self.n_act = n_obs, n_act
        self.device = torch.device(device)
        torch.manual_seed(seed)  # network initialisation
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(seed + 1)
        self.norm = ObsNormalizer(obs_mean, obs_std).to(self.device)
        self.modules: dict[str, nn.Module] = {}
        self.optims: dict[str, torch.optim.Optimizer] = {}
        self.step = 0
        self._dp: dict[int, nn.Module] = {}

    def data_parallel(self) -> None:
        """Wrap every module that has an optimiser in DistributedDataParallel (the process
        group must exist). Updates call ``self.dp(module)(...)`` for the forward passes
        whose gradients train that module, so DDP averages them across ranks in
        ``backward``; forwards without parameter gradients (targets, ``no_grad``,
        ``detach_params``) use the module itself."""
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        for name in self.optims:
            m = self.modules[name]
            self._dp[id(m)] = DDP(m, device_ids=ids, forward_sync_buffers=False)

    def dp(self, module: nn.Module) -> nn.Module:
        """The data-parallel view of ``module`` (itself when training in one process)."""
        return self._dp.get(id(module), module)

    actor: nn.Module

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One gradient step; returns the step's losses as detached 0-d tensors (no host
        sync per step: the training loop averages them on the device and reads them only
        when it logs)."""
        raise NotImplementedError

    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.cfg)

    def state_dict(self) -> dict[str, Any]:
        return {
            "modules": {k: m.state_dict() for k, m in self.modules.items()},
            "optims": {k: o.state_dict() for k, o in self.optims.items()},
            "gen": self.gen.get_state(),
            "step": self.step,
        }

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        for k, m in self.modules.items():
            m.load_state_dict(sd["modules"][k])
        for k, o in self.optims.items():
            o.load_state_dict(sd["optims"][k])
        self.gen.set_state(sd["gen"])
        self.step = int(sd["step"])

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic action in [-1, 1] for a batch of observations (engineering units)."""
        o = torch.as_tensor(np.asarray(obs, np.float32), device=self.device)
        return self.actor.deterministic(o).cpu().numpy()
