"""docs/configuration.md is the schema's own reference: regenerate it with
``edgewarden config reference > docs/configuration.md`` when the schema changes."""

from __future__ import annotations

from pathlib import Path

from edgewarden.gateway.config import Settings
from edgewarden.gateway.configdoc import render

DOC = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"


def test_the_reference_in_docs_is_the_schemas() -> None:
    assert DOC.read_text() == render(), "run: edgewarden config reference > docs/configuration.md"


def test_every_section_and_range_is_in_it() -> None:
    text = render()
    for section in Settings.model_fields:
        assert f"## `{section}" in text
    assert "| `comms_timeout_ms` | number | `1000.0` | > 0, ≤ 60 000 |" in text
    assert "## `safety.limits.NAME`" in text and "## `connections.NAME (type = \"modbus\")`" in text
