"""Plant models for the twins. ``make_plant(name)`` builds one by name.

Each plant module defines a ``PlantModel`` subclass and its ``PlantSpec``; the registry
below maps a plant name to ``module:Class`` and imports it only when asked for.
"""

from __future__ import annotations

import importlib
from typing import Any

from edgewarden.simulators.plants.base import PlantModel, PlantSpec, Signal

__all__ = ["PLANTS", "PlantModel", "PlantSpec", "Signal", "make_plant", "plant_names"]

PLANTS: dict[str, str] = {
    "cstr": "edgewarden.simulators.plants.cstr:CstrPlant",
    "hvac": "edgewarden.simulators.plants.hvac:HvacPlant",
    "tanks": "edgewarden.simulators.plants.tanks:TanksPlant",
}


def plant_names() -> tuple[str, ...]:
    return tuple(sorted(PLANTS))


def plant_class(name: str) -> type[PlantModel]:
    try:
        target = PLANTS[name]
    except KeyError:
        raise KeyError(f"unknown plant {name!r} (known: {', '.join(plant_names())})") from None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


def make_plant(name: str, **kwargs: Any) -> PlantModel:
    """A fresh plant of the named kind; kwargs go to its constructor (seed=...)."""
    return plant_class(name)(**kwargs)
