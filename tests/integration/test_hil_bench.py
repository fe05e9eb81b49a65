"""The HIL bench end to end against the CSTR twin (the CI subset of the library), and a
deliberately faulty controller that the invariants must catch.

The faulty controller is the real daemon with its action shield patched out *inside this
test*: a ``sitecustomize`` module on the daemon's PYTHONPATH replaces
``ActionShield.apply`` with a pass-through. Nothing in the shipped code can switch the
shield off.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from edgewarden.data import EXAMPLES, MODELS
from edgewarden.hil.bench import run_bench, run_one
from edgewarden.hil.scenario import load_scenario

REPO = Path(__file__).resolve().parents[2]
LIBRARY = REPO / "edgewarden" / "hil" / "scenarios"

NO_SHIELD = textwrap.dedent("""
    # test fixture: the gateway without its action shield (a deliberately faulty controller)
    import edgewarden.gateway.safety.shield as _shield

    def _apply(self, proposed, last, dt, out, lo=None, hi=None):
        res = self.result
        res.ok, res.clipped, res.rate_limited, res.code = True, 0, 0, "ok"
        out[:] = proposed
        return res

    _shield.ActionShield.apply = _apply
""")


def test_ci_subset_estop_reset_passes_and_reports(tmp_path: Path) -> None:
    code, html = run_bench([LIBRARY / "cstr_estop_reset.toml", LIBRARY / "cstr_model_swap.toml"],
                           tmp_path, quiet=True)
    summary = json.loads((tmp_path / "summary.json").read_text())
    by_name = {s["name"]: s for s in summary["scenarios"]}
    run = by_name["cstr_estop_reset"]
    assert code == 0, json.dumps(run["invariants"], indent=1)
    verdicts = {v["name"]: v for v in run["invariants"]}
    assert {"actions_within_limits", "no_write_manual_estop", "estop_reaction", "audit",
            "deadline_miss_rate", "expect_trips"} <= set(verdicts)
    assert all(v["passed"] for v in verdicts.values())
    assert len(verdicts["estop_reaction"]["samples"]) == 2
    assert by_name["cstr_model_swap"]["result"] in ("skipped", "pass")
    text = html.read_text()
    assert "PASS" in text and "data:image/png;base64," in text and "estop_reaction" in text
    assert (tmp_path / "cstr_estop_reset" / "trajectories.png").stat().st_size > 10_000
    assert (tmp_path / "cstr_estop_reset" / "latency.png").exists()
    # provenance: what ran, where and when
    prov = summary["provenance"]
    assert prov["version"] and prov["commit"] and prov["host"] and prov["generated"]
    assert prov["models"] and all(len(m) == 64 for m in prov["models"]), prov
    assert run["models"][0] in prov["models"] and all(m in text for m in prov["models"])
    assert "<th>edgewarden</th>" in text and "<th>#</th><th>t [s]</th>" in text  # numbered events


def test_faulty_controller_without_shield_fails_the_limits(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    fixture = tmp_path / "no_shield"
    fixture.mkdir()
    (fixture / "sitecustomize.py").write_text(NO_SHIELD)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(fixture), str(REPO)]))
    scenario = tmp_path / "faulty.toml"
    scenario.write_text(textwrap.dedent(f"""
        [scenario]
        name = "faulty_no_shield"
        description = "the gateway with its shield patched out: a jump after start"
        duration_s = 5.0
        expect_fail = ["actions_within_limits"]

        [plant]
        name = "cstr"
        time_scale = 5.0

        [gateway]
        config = "{EXAMPLES / 'cstr.toml'}"
        model = "{MODELS / 'cstr_baseline.onnx'}"
        cycle_hz = 10.0

        [[events]]
        at = 1.0
        kind = "estop"

        [[events]]
        at = 1.5
        kind = "reset"

        [[events]]
        at = 2.5
        kind = "start"

        [invariants]
        estop_reaction_ms = 250
    """))
    summary, _, data, verdicts = run_one(load_scenario(scenario), tmp_path / "report", quiet=True,
                                         plots=False)
    by = {v.name: v for v in verdicts}
    assert not by["actions_within_limits"].passed, by["actions_within_limits"].detail
    assert "stepped" in by["actions_within_limits"].detail
    assert "audit cycle" in by["actions_within_limits"].detail or "PLC" in by["actions_within_limits"].detail
    # the rest of the gateway still works: the other invariants hold
    assert by["estop_reaction"].passed and by["audit"].passed, verdicts
    # the scenario says this must fail, so the scenario itself passes
    assert summary["result"] == "pass"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(p.name for p in LIBRARY.glob("*.toml")))
def test_library_scenario_passes(name: str, tmp_path: Path) -> None:
    summary, _, _, _ = run_one(load_scenario(LIBRARY / name), tmp_path, quiet=True, plots=False)
    assert summary["result"] in ("pass", "skipped"), json.dumps(summary["invariants"], indent=1)
