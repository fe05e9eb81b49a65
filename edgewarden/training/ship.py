"""The learned policies shipped in ``models/``: one seeded recipe per plant, reproducible.

    edgewarden train ship PLANT [--out-dir models] [--work DIR]

runs, for the plant's :data:`RECIPES` entry, exactly::

    edgewarden train collect PLANT --policy QUALITY --steps N --seed 0 --out WORK/PLANT_QUALITY.h5
    edgewarden train fit --algo ALGO --dataset WORK/PLANT_QUALITY.h5 --steps S --seed SEED \
        --set hidden=[64,64] --out WORK/PLANT_ALGO
    edgewarden train export WORK/PLANT_ALGO --out models/PLANT_ALGO.onnx

in one process with one torch thread, then evaluates the exported file through
onnxruntime on the twin (10 episodes, seeds 1000..1009) and adds the recipe, the
commands and that evaluation to the manifest ``models/PLANT_ALGO.onnx.json`` (whose
``sha256`` the example config ``examples/PLANT.toml`` pins). The same command on the
same CPU and torch build writes the same bytes (tested, slow); another CPU's floating
point may differ in the last bits and so in the hash.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from edgewarden.data import MODELS

__all__ = ["RECIPES", "Recipe", "ship"]



@dataclass(frozen=True)
class Recipe:
    quality: str  # behaviour policy of the dataset
    algo: str  # offline RL algorithm
    steps: int  # gradient steps, batch 256
    dataset_steps: int = 50_000  # transitions collected (collection seed 0)
    seed: int = 0  # training seed
    hidden: tuple[int, ...] = (64, 64)  # actor (and critic) widths: small enough to ship

    def commands(self, plant: str, work: str, out: str) -> list[str]:
        ds = f"{work}/{plant}_{self.quality}.h5"
        run = f"{work}/{plant}_{self.algo}"
        return [
            f"edgewarden train collect {plant} --policy {self.quality} --steps {self.dataset_steps} --seed 0 --out {ds}",
            f"edgewarden train fit --algo {self.algo} --dataset {ds} --steps {self.steps} --seed {self.seed} "
            f"--set hidden=[{','.join(map(str, self.hidden))}] --out {run} --force",
            f"edgewarden train export {run} --out {out}",
        ]


# Chosen from the results table of docs/training.md, each recipe is one of its cells
# (seed 0): the pair that scored best with no violations on every seed at that budget.
# CSTR: IQL on mixed data, 99.4 (the P baseline scores 101.7 there, so the demo keeps it);
# tanks: IQL on expert data, 100.0 (no algorithm beat medium there without violations);
# HVAC: IQL on medium data, 99.7 against the medium controller's 96.6.
RECIPES: dict[str, Recipe] = {
    "cstr": Recipe(quality="mixed", algo="iql", steps=5000),
    "tanks": Recipe(quality="expert", algo="iql", steps=5000),
    "hvac": Recipe(quality="medium", algo="iql", steps=5000),
}


def model_path(plant: str, out_dir: Path) -> Path:
    return out_dir / f"{plant}_{RECIPES[plant].algo}.onnx"


def ship(plant: str, out_dir: str | Path = MODELS, work: str | Path | None = None,
         eval_episodes: int = 10) -> dict:
    """Build ``out_dir/<plant>_<algo>.onnx`` and its manifest; returns the manifest."""
    import torch

    from edgewarden.training.onnx_run import load_onnx_policy
    from edgewarden.training.collect import collect
    from edgewarden.training.evaluate import evaluate_policy
    from edgewarden.training.export import export_checkpoint
    from edgewarden.training.fit import fit

    if plant not in RECIPES:
        raise ValueError(f"no shipped-policy recipe for plant {plant!r} (known: {', '.join(RECIPES)})")
    r = RECIPES[plant]
    torch.set_num_threads(1)  # one thread: the same reductions in the same order on every run
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = model_path(plant, out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(work) if work is not None else Path(tmp)
        wd.mkdir(parents=True, exist_ok=True)
        ds = wd / f"{plant}_{r.quality}.h5"
        run = wd / f"{plant}_{r.algo}"
        collect(plant, r.quality, r.dataset_steps, ds, seed=0, progress=False)
        fit(r.algo, ds, r.steps, run, seed=r.seed, overrides={"hidden": r.hidden}, progress=False, force=True,
            log_every=1000)
        res = export_checkpoint(run, out)
    _, fn = load_onnx_policy(out)
    ev = evaluate_policy(plant, fn, episodes=eval_episodes)
    # the plant's hand-written baseline on the same episodes, where there is one: the demo
    # runs the learned policy when it scores higher, and shadows it beside the baseline otherwise
    base_path = MODELS / f"{plant}_baseline.onnx"
    baseline = None
    if base_path.exists():
        bev = evaluate_policy(plant, load_onnx_policy(base_path)[1], episodes=eval_episodes)
        baseline = {"model": base_path.name, "normalized_score": round(bev.normalized_score, 6),
                    "violation_rate": round(bev.violation_rate, 6)}
    manifest_path = Path(str(out) + ".json")
    manifest = json.loads(manifest_path.read_text())
    manifest.update({
        "plant": plant, "recipe": asdict(r),
        "commands": r.commands(plant, "WORK", f"edgewarden/data/models/{out.name}"),
        "reproduce": f"edgewarden train ship {plant}",
        "evaluation": {"episodes": eval_episodes, "seeds": f"1000-{1000 + eval_episodes - 1}",
                       **{k: round(v, 6) for k, v in ev.to_dict().items() if isinstance(v, float)}},
        "torch": torch.__version__,
        **({"baseline": baseline} if baseline else {}),
    })
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    assert manifest["sha256"] == res.sha256
    return manifest
