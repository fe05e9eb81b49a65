"""``edgewarden train ...``: offline training. Needs the ``train`` extra (torch, h5py, onnx).

Nothing here is imported by the gateway; heavy modules load inside the handlers, and a
missing extra becomes one clear sentence instead of an ImportError.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
from pathlib import Path

from edgewarden.gateway.errors import GatewayError

_TRAIN_EXTRA = "pip install -c constraints.txt -e '.[train]'"


def require_train_extra(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise GatewayError(f"this command needs the 'train' extra ({', '.join(missing)} not installed): "
                           f"run {_TRAIN_EXTRA}")


def register(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="offline training and export (needs the 'train' extra)")
    tsub = train.add_subparsers(dest="train_command", metavar="COMMAND", required=True)
    base = tsub.add_parser("baseline", help="tune the proportional baseline on the plant model, export ONNX")
    base.add_argument("plant", choices=["cstr"])
    base.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    base.set_defaults(handler=_baseline)

    col = tsub.add_parser("collect", help="collect a D4RL-layout HDF5 dataset from a twin env")
    col.add_argument("plant")
    col.add_argument("--policy", default="medium", choices=["random", "medium", "expert", "mixed"])
    col.add_argument("--steps", type=int, required=True, help="transitions to write")
    col.add_argument("--out", type=Path, required=True, help="HDF5 file to write")
    col.add_argument("--seed", type=int, default=0)
    col.add_argument("--n-envs", type=int, default=8, help="vectorised envs")
    col.set_defaults(handler=_collect)

    fit = tsub.add_parser("fit", help="train an offline RL policy on a dataset")
    fit.add_argument("--algo", required=True, choices=["bc", "td3bc", "iql", "cql"])
    fit.add_argument("--dataset", type=Path, required=True, help="HDF5 file in the D4RL layout")
    fit.add_argument("--steps", type=int, required=True, help="gradient steps (total, also when resuming)")
    fit.add_argument("--out", type=Path, required=True, help="run directory (checkpoint, metrics)")
    fit.add_argument("--seed", type=int, default=None,
                     help="network initialisation and sampling (default 0; a resumed run keeps its own)")
    fit.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    fit.add_argument("--nproc", type=int, default=1,
                     help="data-parallel processes on this machine (DDP: gloo on CPU, nccl on CUDA, one GPU "
                          "each); batch_size is per process. Under torchrun leave it out")
    fit.add_argument("--eval-every", type=int, default=0, help="evaluate on the twin every N steps (0: never)")
    fit.add_argument("--eval-episodes", type=int, default=5)
    fit.add_argument("--checkpoint-every", type=int, default=5000)
    fit.add_argument("--log-every", type=int, default=1000)
    fit.add_argument("--resume", action="store_true", help="continue from RUN/last.pt (same algorithm and settings)")
    fit.add_argument("--force", action="store_true", help="replace a run already in --out")
    fit.add_argument("--allow-degenerate-actions", action="store_true",
                     help="train td3bc/cql even where an action never varies or sits on a bound (train inspect)")
    fit.add_argument("--plant", help="twin to evaluate on (default: the dataset's plant)")
    fit.add_argument("--tensorboard", action="store_true", help="also log to RUN/tb (needs tensorboard)")
    fit.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override an algorithm config field, e.g. --set alpha=2.5 (JSON values)")
    fit.add_argument("--no-progress", action="store_true")
    fit.set_defaults(handler=_fit)

    ev = tsub.add_parser("evaluate", help="roll a policy out on the twin: score, violations, shield rate")
    ev.add_argument("policy", help="checkpoint (.pt or run dir), exported .onnx, or random|medium|expert")
    ev.add_argument("--plant", help="twin (default: the policy's plant)")
    ev.add_argument("--episodes", type=int, default=10)
    ev.add_argument("--seed", type=int, default=1000)
    ev.add_argument("--plot", type=Path, help="PNG of episode 0 (needs matplotlib); a CSV is written beside it")
    ev.add_argument("--json", action="store_true", help="print the result as one JSON object")
    ev.set_defaults(handler=_evaluate)

    ins = tsub.add_parser("inspect", help="what a dataset can teach: per action spread, share at each bound, "
                          "coverage; per observation range (against the twin's hard limits, where the plant "
                          "has a twin); episodes, returns, violation rate")
    ins.add_argument("dataset", type=Path)
    ins.add_argument("--json", action="store_true", help="print the report as one JSON object")
    ins.set_defaults(handler=_inspect)

    up = tsub.add_parser("upgrade", help="rewrite a format-1 dataset (rows of several envs interleaved) in the "
                         "current D4RL layout: each episode's rows contiguous")
    up.add_argument("dataset", type=Path)
    up.add_argument("out", type=Path, help="HDF5 file to write (never overwritten)")
    up.set_defaults(handler=_upgrade)

    mi = tsub.add_parser("to-minari", help="write a dataset as a local Minari dataset (needs the 'minari' extra)")
    mi.add_argument("dataset", type=Path)
    mi.add_argument("--id", required=True, help="Minari dataset id, e.g. edgewarden/cstr-medium-v0")
    mi.add_argument("--root", type=Path, help="Minari's datasets directory (default: MINARI_DATASETS_PATH or "
                    "~/.minari/datasets)")
    mi.set_defaults(handler=_to_minari)

    rp = tsub.add_parser("report", help="an offline report on a policy for a plant without a twin: agreement with "
                         "the data, value estimates, out-of-support share")
    rp.add_argument("policy", type=Path, help="exported .onnx, or checkpoint (.pt or run dir: value estimates too)")
    rp.add_argument("--dataset", type=Path, required=True, help="the plant's data (e.g. train from-audit's)")
    rp.add_argument("--json", action="store_true", help="print the report as one JSON object")
    rp.add_argument("--horizon", type=int, default=100, metavar="STEPS",
                    help="rows (cycles) per window of the off-policy estimate (default 100)")
    rp.set_defaults(handler=_report)

    un = tsub.add_parser("uncertainty", help="an exported policy's uncertainty output on the twin, in closed "
                         "loop: its spread, the share of steps above the threshold, the longest run above it")
    un.add_argument("policy", type=Path, help="exported .onnx with an uncertainty output")
    un.add_argument("--plant", help="twin (default: the policy's plant)")
    un.add_argument("--episodes", type=int, default=10)
    un.add_argument("--seed", type=int, default=1000)
    un.add_argument("--json", action="store_true", help="print the result as one JSON object")
    un.set_defaults(handler=_uncertainty)

    ex = tsub.add_parser("export", help="export a checkpoint as a self-contained ONNX policy")
    ex.add_argument("checkpoint", type=Path)
    ex.add_argument("--out", type=Path, required=True)
    ex.add_argument("--uncertainty-threshold", type=float, default=None, metavar="X",
                    help="the uncertainty above which the gateway counts an input as out of distribution, in "
                         "units of the training data's 99.9th percentile (default 5)")
    ex.add_argument("--no-uncertainty", action="store_true",
                    help="no uncertainty output, even where the checkpoint has a critic ensemble")
    ex.set_defaults(handler=_export)

    fa = tsub.add_parser("from-audit", help="a D4RL-layout HDF5 dataset from the gateway's audit log (AUTO cycles)")
    fa.add_argument("log", type=Path, help="audit log directory")
    fa.add_argument("-o", "--out", type=Path, required=True, help="HDF5 file to write (never overwritten)")
    fa.add_argument("--since", help="from this time (Unix seconds or ISO-8601, UTC if no zone)")
    fa.add_argument("--until", help="before this time")
    fa.add_argument("--plant", help="plant name for the metadata (default: the gateway name in the log)")
    fa.add_argument("--reward-track", action="append", default=[], metavar="PV=SP",
                    help="reward = -|PV - SP| of the next observation, summed over every pair given (PV an "
                         "observation tag; SP one too, or a number for a setpoint that is not a tag); without it "
                         "the rewards are zeros (enough for bc)")
    fa.add_argument("--reward-move", type=float, default=0.0, metavar="W",
                    help="also - W * sum of |change of each action| / its span (penalises move effort)")
    fa.add_argument("--reward-limit", action="append", default=[], metavar="PV=LOW:HIGH",
                    help="also - (limit weight) * how far PV is beyond LOW..HIGH (soft limits)")
    fa.add_argument("--reward-limit-weight", type=float, default=1.0, metavar="W",
                    help="weight of the --reward-limit terms (default 1)")
    fa.set_defaults(handler=_from_audit)

    sh = tsub.add_parser("ship", help="reproduce a shipped learned policy in models/ (seeded recipe per plant)")
    sh.add_argument("plant", choices=["cstr", "tanks", "hvac"])
    sh.add_argument("--out-dir", type=Path, help="where the model and manifest go (default: the repo's models/)")
    sh.add_argument("--work", type=Path, help="keep the dataset and run here (default: a temporary directory)")
    sh.set_defaults(handler=_ship)


def _inspect(args: argparse.Namespace) -> int:
    import json

    require_train_extra("h5py")
    from edgewarden.training.dataset_report import inspect_dataset
    from edgewarden.training.datasets import load

    r = inspect_dataset(load(args.dataset))
    print(json.dumps(r.to_dict()) if args.json else "\n".join(r.lines()))
    return 0


def _upgrade(args: argparse.Namespace) -> int:
    require_train_extra("h5py")
    from edgewarden.training.datasets import DatasetError, upgrade

    if args.out.exists():
        raise DatasetError(f"{str(args.out)!r} exists: name a new file (upgrade never overwrites)")
    meta = upgrade(args.dataset, args.out)
    print(f"wrote {args.out}: {meta.n} transitions, format {meta.format_version}, each episode's rows contiguous")
    return 0


def _uncertainty(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    require_train_extra("gymnasium", "onnxruntime")
    from edgewarden.training.evaluate import evaluate_policy, twin_mismatch
    from edgewarden.training.onnx_run import load_onnx_policy

    if args.episodes < 1:
        raise GatewayError(f"--episodes must be >= 1, got {args.episodes}")
    batches: list[np.ndarray] = []
    contract, fn = load_onnx_policy(args.policy, uncertainties=batches)
    plant = args.plant or str(contract.training_config.get("plant", ""))
    problem = twin_mismatch(plant, tuple(contract.observation_tags), tuple(contract.action_tags))
    if problem is not None:
        raise GatewayError(f"train uncertainty: {problem}")
    r = evaluate_policy(plant, fn, episodes=args.episodes, seed=args.seed)
    u = np.stack(batches)  # (steps, episodes): one batch per step, one row per episode
    thr = float(contract.uncertainty.threshold)
    above = u > thr
    longest = 0
    for col in above.T:
        run = 0
        for a in col:
            run = run + 1 if a else 0
            longest = max(longest, run)
    out = {"plant": plant, "episodes": args.episodes, "steps": int(u.size), "normalized_score": r.normalized_score,
           "threshold": thr, "p50": float(np.quantile(u, 0.5)), "p99": float(np.quantile(u, 0.99)),
           "max": float(u.max()), "share_above": float(above.mean()), "longest_run_above": longest}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{args.policy.name} on the {plant} twin, {args.episodes} episodes ({out['steps']} steps, score "
              f"{r.normalized_score:.1f}): uncertainty p50 {out['p50']:.2f}, p99 {out['p99']:.2f}, max {out['max']:.2f} "
              f"(1 = the data's 99.9th percentile); above the threshold {thr:g} in {out['share_above']:.2%} of the "
              f"steps, longest run {longest} steps")
    return 0


def _to_minari(args: argparse.Namespace) -> int:
    require_train_extra("h5py")
    if importlib.util.find_spec("minari") is None:
        raise GatewayError("this command needs the 'minari' extra (minari not installed): run "
                           "pip install -c constraints.txt -e '.[train,minari]'")
    from edgewarden.training.datasets import load
    from edgewarden.training.minari_export import to_minari

    ds = load(args.dataset)
    where = to_minari(ds, args.id, args.root)
    print(f"wrote Minari dataset {args.id} ({len(ds)} steps) in {where}; read it with minari.load_dataset({args.id!r})"
          + (f" and MINARI_DATASETS_PATH={args.root}" if args.root else ""))
    return 0


def _report(args: argparse.Namespace) -> int:
    import json

    require_train_extra("h5py", *(() if args.policy.suffix == ".onnx" else ("torch",)))
    from edgewarden.training.offline_report import report

    if args.horizon < 1:
        raise GatewayError(f"--horizon {args.horizon}: must be at least 1")
    r = report(args.policy, args.dataset, horizon=args.horizon)
    print(json.dumps(r.to_dict()) if args.json else "\n".join(r.lines()))
    if r.off_policy is not None and args.policy.suffix == ".onnx":
        from edgewarden.training.manifest import record_evidence

        where = record_evidence(args.policy, "off_policy", {**r.off_policy, "dataset": str(args.dataset)})
        print(f"the off-policy estimate is in {where} (model promote reads it)", file=sys.stderr)
    return 0


def _from_audit(args: argparse.Namespace) -> int:
    require_train_extra("h5py")
    from edgewarden.gateway.audit.jsonl import parse_time
    from edgewarden.training.audit_dataset import dataset_from_audit
    from edgewarden.training.reward import RewardSpec

    since = parse_time(args.since) if args.since else None
    until = parse_time(args.until) if args.until else None
    track: list[tuple[str, str | float]] = []
    for pair in args.reward_track:
        pv, sep, sp = pair.partition("=")
        if not sep or not pv.strip() or not sp.strip():
            raise GatewayError(f"--reward-track {pair!r}: write it PV=SP (an observation tag, and a tag or a number)")
        try:
            target: str | float = float(sp)
        except ValueError:
            target = sp.strip()
        track.append((pv.strip(), target))
    limits: list[tuple[str, float, float]] = []
    for pair in args.reward_limit:
        pv, sep, bounds = pair.partition("=")
        low, colon, high = bounds.partition(":")
        try:
            limits.append((pv.strip(), float(low), float(high)))
        except ValueError:
            colon = ""
        if not sep or not colon or not pv.strip():
            raise GatewayError(f"--reward-limit {pair!r}: write it PV=LOW:HIGH (an observation tag and two numbers)")
    reward = RewardSpec(tuple(track), args.reward_move, tuple(limits), args.reward_limit_weight)
    n = dataset_from_audit(args.log, args.out, since=since, until=until, plant=args.plant, reward=reward)
    print(f"wrote {n} transitions to {args.out}", file=sys.stderr)
    return 0


def _baseline(args: argparse.Namespace) -> int:
    require_train_extra("onnx")
    from edgewarden.training.baseline import describe, make_baseline

    tuning = make_baseline(args.out)
    print(f"wrote {args.out}: {describe(tuning)}")
    return 0


def _collect(args: argparse.Namespace) -> int:
    require_train_extra("h5py", "gymnasium")
    from edgewarden.training.collect import collect

    try:
        r = collect(args.plant, args.policy, args.steps, args.out, seed=args.seed, n_envs=args.n_envs)
    except (ValueError, KeyError) as e:  # unknown plant, no controller loops, bad sizes
        raise GatewayError(f"cannot collect: {e.args[0] if e.args else e}") from None
    print(f"wrote {args.out}: {r.meta.n} transitions, {r.episodes} complete episodes, mean return "
          f"{r.mean_return:.1f}, {r.transitions_per_s:,.0f} transitions/s, {r.meta.content_hash}")
    return 0


def _parse_sets(items: list[str]) -> dict[str, object]:
    import json

    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise GatewayError(f"--set {item!r}: expected KEY=VALUE")
        try:
            v = json.loads(value)
        except ValueError:
            v = value
        out[key] = tuple(v) if isinstance(v, list) else v
    return out


def _fit(args: argparse.Namespace) -> int:
    require_train_extra("torch", "h5py")
    from edgewarden.training.fit import fit

    r = fit(args.algo, args.dataset, args.steps, args.out, seed=args.seed, device=args.device,
            eval_every=args.eval_every, eval_episodes=args.eval_episodes,
            checkpoint_every=args.checkpoint_every, log_every=args.log_every, resume=args.resume,
            overrides=_parse_sets(args.set), progress=not args.no_progress, plant=args.plant,
            tensorboard=args.tensorboard, nproc=args.nproc, force=args.force,
            allow_degenerate_actions=args.allow_degenerate_actions)
    import os

    if os.environ.get("RANK", "0") != "0":  # under torchrun: rank 0 reports
        return 0
    msg = f"trained {r.steps} steps in {r.seconds:.1f} s (loading included); checkpoint {args.out / 'last.pt'}"
    if r.last_eval:
        msg += (f"; normalised score {r.last_eval['eval_normalized_score']:.1f}, "
                f"violation rate {r.last_eval['eval_violation_rate']:.4f}")
    print(msg)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import json

    require_train_extra("gymnasium")
    from edgewarden.training.evaluate import evaluate_policy, rollout

    src = args.policy
    reads: tuple[str, ...] | None = None  # the policy's tags (None: a behaviour policy of the twin)
    drives: tuple[str, ...] | None = None
    if src in ("random", "medium", "expert", "mixed"):
        if not args.plant:
            raise GatewayError("evaluating a behaviour policy needs --plant")
        plant, fn = args.plant, src
    elif src.endswith(".onnx"):
        from edgewarden.training.onnx_run import load_onnx_policy

        contract, fn = load_onnx_policy(Path(src))
        plant = args.plant or contract.training_config.get("plant")
        reads, drives = tuple(contract.observation_tags), tuple(contract.action_tags)
        if not plant:
            raise GatewayError(f"{src}: the contract names no plant; pass --plant")
    else:
        require_train_extra("torch")
        from edgewarden.training.datasets import DatasetMeta
        from edgewarden.training.fit import load_checkpoint, policy_fn

        algo, ck = load_checkpoint(src)
        meta = DatasetMeta.from_dict(ck["dataset_meta"])
        plant, fn = args.plant or meta.plant, policy_fn(algo, meta)
        reads, drives = tuple(meta.observation_tags), tuple(meta.action_tags)
    from edgewarden.training.evaluate import twin_mismatch

    problem = twin_mismatch(plant, reads, drives)
    if problem is not None:
        raise GatewayError(f"train evaluate: {problem}")
    r = evaluate_policy(plant, fn, episodes=args.episodes, seed=args.seed)
    if args.plot:
        _plot(args.plot, rollout(plant, fn, episodes=1, seed=args.seed, record=True))
    if args.json:
        print(json.dumps({"plant": plant, "policy": src, **r.to_dict()}))
    else:
        print(f"{plant} {src}: return {r.mean_return:.1f} ± {r.std_return:.1f}, normalised score "
              f"{r.normalized_score:.1f} (random {r.random_return:.1f}, expert {r.expert_return:.1f}), "
              f"violation rate {r.violation_rate:.4f}, shield rate {r.shield_rate:.4f} "
              f"over {r.episodes} episodes / {r.steps} steps")
    return 0


def _plot(path: Path, res: dict) -> None:
    import csv
    import importlib.util

    traj, cols = res["trajectory"], res["columns"]
    csv_path = path.with_suffix(".csv")
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", *cols])
        for i, row in enumerate(traj):
            w.writerow([i, *(f"{v:.6g}" for v in row)])
    if importlib.util.find_spec("matplotlib") is None:
        print(f"matplotlib is not installed: wrote the trajectory as {csv_path} only")
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(cols), 1, figsize=(8, 1.6 * len(cols)), sharex=True)
    for ax, j in zip(axes, range(len(cols)), strict=True):
        ax.plot(traj[:, j])
        ax.set_ylabel(cols[j], fontsize=8)
    axes[-1].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(f"wrote {path} and {csv_path}")


def _export(args: argparse.Namespace) -> int:
    require_train_extra("torch", "onnx")
    from edgewarden.gateway.errors import ConfigError
    from edgewarden.training.export import export_checkpoint
    from edgewarden.training.uncertainty import THRESHOLD

    threshold = THRESHOLD if args.uncertainty_threshold is None else args.uncertainty_threshold
    if not (threshold > 0 and math.isfinite(threshold)):
        raise ConfigError(f"--uncertainty-threshold must be a positive number, got {args.uncertainty_threshold}")
    r = export_checkpoint(args.checkpoint, args.out, uncertainty=not args.no_uncertainty,
                          uncertainty_threshold=threshold)
    unc = r.contract.uncertainty
    print(f"wrote {r.path} sha256:{r.sha256} (parity vs torch: {r.parity_normalized:.2e} normalised, "
          f"{r.parity_engineering:.2e} in engineering units); manifest {r.path}.json")
    print("uncertainty output: " + ("none" if unc is None else
          f"{unc.method}, 1.0 = {unc.scale:.4g} (the data's 99.9th percentile), threshold {unc.threshold:g}"))
    return 0


def _ship(args: argparse.Namespace) -> int:
    require_train_extra("torch", "h5py", "onnx", "gymnasium")
    from edgewarden.data import MODELS
    from edgewarden.training.ship import ship

    m = ship(args.plant, args.out_dir or MODELS, args.work)
    ev = m["evaluation"]
    print(f"wrote {m['model']} sha256:{m['sha256']} ({m['algorithm']} on {m['recipe']['quality']} data): "
          f"normalised score {ev['normalized_score']:.1f}, violation rate {ev['violation_rate']:.4f} "
          f"over {ev['episodes']} episodes")
    return 0
