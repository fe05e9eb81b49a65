"""What can be said about a policy for a plant with no simulator (``edgewarden train
report``), from the data it was trained on (or any dataset of the same plant):

- **action agreement**: per action, the mean |π(s) − a| against the action the data
  recorded in the same state, and the share of states within 5 % of the action's span;
- **value estimates** (a checkpoint with a critic: TD3+BC, IQL, CQL): mean Q(s, π(s))
  against mean Q(s, a) of the data, in the reward's units per step, discounted; an ONNX
  export carries no critic;
- **out of support**: the share of states where π(s) leaves, in any action, the range
  the data's actions cover (their 0.5–99.5 percentiles): where it would act as the
  recorded controller never did, nothing in the data says what happens;
- **copying**: the actions that π moves mostly with observations that echo the actions
  (a readback of the gateway's own output): the check ``model promote`` makes
  (edgewarden/gateway/policy/evidence.py), here on the dataset's states;
- **off-policy estimate** (a dataset with a reward expression: ``train from-audit
  --reward-track``): π's expected reward against the controller that wrote the data, with
  an interval and a verdict (edgewarden/training/off_policy.py). For an exported model it
  is written into the manifest beside it, where ``model promote`` reads it.

It runs nothing on the plant: shadow mode (``edgewarden model shadow``) is the next step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgewarden.training.off_policy import OffPolicyEstimate, estimate
from edgewarden.training.reward import RewardSpec

AGREE_SHARE_OF_SPAN = 0.05
SUPPORT_PERCENTILES = (0.5, 99.5)


@dataclass
class ActionAgreement:
    tag: str
    units: str
    mean_abs_diff: float
    within_5pct: float  # share of states


@dataclass
class OfflineReport:
    policy: str
    dataset: str
    plant: str
    transitions: int
    agreement: list[ActionAgreement]
    out_of_support: float
    q_policy: float | None  # mean Q(s, π(s)); None: no critic
    q_data: float | None  # mean Q(s, a_data)
    copying: list[str] | None = None  # what model promote would refuse it for (echoes of the actions)
    off_policy: dict[str, Any] | None = None  # edgewarden/training/off_policy.py, when the data has a reward
    off_policy_note: str = ""  # why there is none

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        out = [f"offline report: {self.policy} on {self.dataset} ({self.transitions} transitions, plant "
               f"{self.plant}); nothing was run on the plant"]
        for a in self.agreement:
            out.append(f"  agreement  {a.tag}: mean |π(s) − a| {a.mean_abs_diff:.4g} {a.units}".rstrip()
                       + f", {a.within_5pct:.1%} of states within 5 % of its span")
        out.append(f"  support    {self.out_of_support:.1%} of states: π(s) outside the data's action range "
                   f"({SUPPORT_PERCENTILES[0]:g}–{SUPPORT_PERCENTILES[1]:g} percentiles)")
        if self.q_policy is None:
            out.append("  values     no critic (an ONNX export or BC): pass the run's checkpoint for value estimates")
        else:
            out.append(f"  values     mean Q(s, π(s)) {self.q_policy:.4g} against mean Q(s, a_data) {self.q_data:.4g}")
        if self.copying:
            out += [f"  copying    {c}" for c in self.copying]
        elif self.copying is not None:
            out.append("  copying    none: no action moves mostly with a readback of the actions")
        if self.off_policy is not None:
            out.append(f"  estimate   {OffPolicyEstimate(**self.off_policy).line()}")
            out.append(f"             reward r = {self.off_policy['reward']}; against {self.off_policy['behaviour']}")
        else:
            out.append(f"  estimate   none: {self.off_policy_note}")
        return out


def report(policy: Path, dataset_path: Path, *, horizon: int = 100) -> OfflineReport:
    from edgewarden.training.datasets import DatasetError, load

    data = load(dataset_path)
    meta = data.meta
    obs_tags, act_tags, act_fn, q_fn = _policy(policy)
    if (tuple(obs_tags), tuple(act_tags)) != (tuple(meta.observation_tags), tuple(meta.action_tags)):
        raise DatasetError(f"{dataset_path} does not fit {policy}: the policy reads {', '.join(obs_tags)} and "
                           f"writes {', '.join(act_tags)}; the dataset has {', '.join(meta.observation_tags)} and "
                           f"{', '.join(meta.action_tags)} (same tags, same order)")
    obs, actions = data.observations, data.actions
    proposed = np.asarray(act_fn(obs), dtype=np.float64).reshape(actions.shape)
    span = np.asarray(meta.action_high, np.float64) - np.asarray(meta.action_low, np.float64)
    span = np.where(span > 0, span, 1.0)
    diff = np.abs(proposed - actions)
    lo, hi = np.percentile(actions, SUPPORT_PERCENTILES, axis=0)
    outside = ((proposed < lo) | (proposed > hi)).any(axis=1)
    agreement = [ActionAgreement(tag, units, float(diff[:, j].mean()),
                                 float((diff[:, j] <= AGREE_SHARE_OF_SPAN * span[j]).mean()))
                 for j, (tag, units) in enumerate(zip(meta.action_tags, meta.action_units, strict=True))]
    q_pi = q_data = None
    if q_fn is not None:
        q_pi, q_data = float(q_fn(obs, proposed).mean()), float(q_fn(obs, actions).mean())
    off_policy, note = None, ""
    stored = meta.extra.get("reward_spec")
    if stored is None:
        note = "the dataset has no reward expression (train from-audit --reward-track PV=SP writes one)"
    else:
        try:
            off_policy = estimate(data, act_fn, RewardSpec.from_dict(stored), horizon=horizon).to_dict()
        except ValueError as e:  # RewardError, or a history too short for the horizon
            note = str(e)
    return OfflineReport(str(policy), str(dataset_path), meta.plant, len(data), agreement, float(outside.mean()),
                         q_pi, q_data, _copying(data, act_fn, span), off_policy, note)


def _copying(data: Any, act_fn: Any, span: np.ndarray) -> list[str]:
    """The promotion's copying check on up to 256 of the dataset's states (evenly spaced)."""
    from edgewarden.gateway.policy.evidence import copying, sensitivity
    from edgewarden.training.dataset_report import echoed_action

    meta = data.meta
    echoes = {i: list(meta.action_tags).index(a) for i, tag in enumerate(meta.observation_tags)
              if (a := echoed_action(data, i, tag)) is not None}
    if not echoes:
        return []
    rows = np.linspace(0, len(data) - 1, min(256, len(data))).astype(int)
    x = np.asarray(data.observations, np.float64)[rows]
    scale = np.asarray(data.observations, np.float64).std(axis=0)
    for i, j in echoes.items():  # a readback probed by at least 1 % of its action's span, as the gateway does
        scale[i] = max(scale[i], 0.01 * span[j])
    sens = sensitivity(lambda b: np.asarray(act_fn(b), np.float64), x, scale, span)
    return [c.message() for c in copying(sens, echoes, meta.observation_tags, meta.action_tags)]


def _policy(path: Path) -> tuple[Any, Any, Any, Any]:
    """(observation tags, action tags, obs → action in engineering units, (obs, action) → Q
    or None) of an exported ONNX file or a checkpoint (.pt or run directory). A checkpoint's
    actions are scaled by the bounds of the data it was trained on, not the report's."""
    if path.suffix == ".onnx":
        from edgewarden.training.onnx_run import load_onnx_policy

        contract, fn = load_onnx_policy(path)
        return contract.observation_tags, contract.action_tags, fn, None
    import torch

    from edgewarden.training.datasets import DatasetMeta
    from edgewarden.training.fit import load_checkpoint, policy_fn

    algo, ck = load_checkpoint(path)
    trained = DatasetMeta.from_dict(ck["dataset_meta"])
    critic = algo.modules.get("critic")
    lo, hi = np.asarray(trained.action_low), np.asarray(trained.action_high)
    mid, half = (hi + lo) / 2, np.where(hi > lo, (hi - lo) / 2, 1.0)

    def q(obs: np.ndarray, act: np.ndarray) -> np.ndarray:
        o = torch.as_tensor(np.asarray(obs, np.float32), device=algo.device)
        a = torch.as_tensor(((np.asarray(act) - mid) / half).astype(np.float32), device=algo.device)
        with torch.no_grad():
            return critic(o, a).min(0).values.cpu().numpy()

    return (trained.observation_tags, trained.action_tags, policy_fn(algo, trained),
            q if critic is not None else None)
