"""Where the files the wheel ships live: the same paths in a checkout and in an install."""

from pathlib import Path

DATA = Path(__file__).resolve().parent
EXAMPLES = DATA / "examples"  # example configs, written against ../models and ../var
MODELS = DATA / "models"  # the shipped policies and their contracts
SYSTEMD = DATA / "systemd"  # the unit and its drop-ins
