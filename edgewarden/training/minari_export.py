"""Our datasets as Minari datasets, so the ecosystem's tools (Minari, torchrl, d3rlpy's
Minari loaders) read them: ``edgewarden train to-minari DATASET --id NAMESPACE/NAME-v0``.

One Minari episode per episode of the file (rows up to a terminal or a timeout; the D4RL
layout keeps each episode's rows together): ``observations`` are the episode's
observations plus the last row's next observation (T + 1 of them, as Minari wants),
``terminations`` our ``terminals``, ``truncations`` our ``timeouts``. The action space is
a Box of the dataset's action bounds, the observation space an unbounded Box; tags, units,
plant, behaviour policy and content hash go into the description. Needs the ``minari``
extra (``pip install 'edgewarden[minari]'``); Minari writes under ``MINARI_DATASETS_PATH``
(``--root``) or its default ``~/.minari/datasets``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgewarden.training.datasets import Dataset, DatasetError

__all__ = ["episodes", "to_minari"]


def episodes(ds: Dataset) -> list[dict[str, Any]]:
    """The dataset's episodes in Minari's buffer layout."""
    ends = np.flatnonzero(ds.terminals | ds.timeouts)
    if len(ds) and (ends.size == 0 or ends[-1] != len(ds) - 1):
        raise DatasetError("the dataset's last row ends no episode (neither a terminal nor a timeout): "
                           "Minari needs every episode to end")
    out, start = [], 0
    for k, end in enumerate(ends):
        sl = slice(start, end + 1)
        out.append({"id": k,
                    "observations": np.concatenate([ds.observations[sl], ds.next_observations[end:end + 1]]),
                    "actions": ds.actions[sl], "rewards": ds.rewards[sl].astype(np.float64),
                    "terminations": ds.terminals[sl].copy(), "truncations": ds.timeouts[sl].copy()})
        start = end + 1
    return out


def to_minari(ds: Dataset, dataset_id: str, root: Path | None = None) -> Path:
    """Write ``ds`` as the local Minari dataset ``dataset_id``; returns its directory."""
    import warnings

    import gymnasium as gym
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    if root is not None:
        os.environ["MINARI_DATASETS_PATH"] = str(Path(root).resolve())  # Minari reads its root from here only
    meta = ds.meta
    buffers = [EpisodeBuffer(**e) for e in episodes(ds)]
    description = json.dumps({"source": "edgewarden", "plant": meta.plant, "observation_tags": meta.observation_tags,
                              "observation_units": meta.observation_units, "action_tags": meta.action_tags,
                              "action_units": meta.action_units, "behaviour_policy": meta.behaviour_policy,
                              "content_hash": meta.content_hash})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "env_spec is None": a plant has no registered environment to name
        made = minari.create_dataset_from_buffers(
            dataset_id, buffers, algorithm_name=meta.behaviour_policy, author="edgewarden",
            action_space=gym.spaces.Box(np.asarray(meta.action_low, np.float32),
                                        np.asarray(meta.action_high, np.float32), dtype=np.float32),
            observation_space=gym.spaces.Box(-np.inf, np.inf, (meta.n_obs,), np.float32),
            description=description)
    return Path(made.spec.data_path).parent
