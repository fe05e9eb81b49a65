"""Scenario files: the library loads, mistakes are errors naming file and key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from edgewarden.data import EXAMPLES
from edgewarden.gateway.errors import ConfigError
from edgewarden.gateway.tomlwrite import dumps_toml
from edgewarden.hil.gwconfig import plc_name
from edgewarden.hil.scenario import load_scenario

LIBRARY = sorted((Path(__file__).resolve().parents[3] / "edgewarden" / "hil" / "scenarios").glob("*.toml"))
CONFIG = EXAMPLES / "cstr.toml"

BASE = f"""
[scenario]
name = "t"
duration_s = 5.0
[plant]
name = "cstr"
[gateway]
config = "{CONFIG}"
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "s.toml"
    p.write_text(text)
    return p


def test_library_is_not_empty_and_loads() -> None:
    assert len(LIBRARY) >= 8
    for path in LIBRARY:
        sc = load_scenario(path)
        assert sc.config.exists(), path
        assert sc.model is None or sc.model.exists(), path
        assert [e.at for e in sc.events] == sorted(e.at for e in sc.events)


def test_minimal_scenario_gets_default_invariants(tmp_path: Path) -> None:
    sc = load_scenario(_write(tmp_path, BASE))
    assert sc.twin and sc.start and sc.events == []
    assert sc.invariants["actions_within_limits"] and sc.invariants["audit"]


@pytest.mark.parametrize("extra, key", [
    ('[invariants]\nestop_budget = 3\n', "invariants.estop_budget"),
    ('[[events]]\nat = 1.0\nkind = "explode"\n', "events[0].kind"),
    ('[[events]]\nat = 1.0\nkind = "setpoint"\ntag = "T_sp"\n', "events[0].value"),
    ('[[events]]\nat = 9.0\nkind = "estop"\n', "events"),
    ('[[events]]\nat = 1.0\nkind = "estop"\ncolour = "red"\n', "events[0].colour"),
])
def test_mistakes_name_the_key(tmp_path: Path, extra: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_scenario(_write(tmp_path, BASE + extra))


def test_unknown_top_level_and_wrong_type(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        load_scenario(_write(tmp_path, BASE + "[plantt]\nname = 'x'\n"))
    with pytest.raises(ConfigError, match="scenario.duration_s"):
        load_scenario(_write(tmp_path, BASE.replace("duration_s = 5.0", 'duration_s = "long"')))


def test_external_plc_refuses_twin_only_events(tmp_path: Path) -> None:
    text = BASE + '[plant.external]\nopcua = "opc.tcp://10.0.0.5:4840"\n[[events]]\nat = 1.0\nkind = "fault"\nfault = "freeze"\n'
    with pytest.raises(ConfigError, match="needs a twin"):
        load_scenario(_write(tmp_path, text))
    sc = load_scenario(_write(tmp_path, BASE + '[plant.external]\nopcua = "opc.tcp://10.0.0.5:4840"\n'))
    assert not sc.twin and sc.external["opcua"].endswith(":4840")


def test_toml_writer_round_trips() -> None:
    data = {"a": {"b": 1, "c": [1.5, 2.0], "d": {"x": 1.0, "y": 2.0}, "e": {"f": {"g": "h\"i"}}},
            "flag": True, "name": "x y"}
    assert tomllib.loads(dumps_toml(data)) == data


def test_plc_name_from_node() -> None:
    assert plc_name("ns=2;s=cstr.T", "T") == "T"
    assert plc_name("ns=2;s=tanks.h1_sp", "level") == "h1_sp"
    assert plc_name(None, "feed") == "feed"
