"""SIGHUP reload rules, the log formats, and the status view."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import structlog

from edgewarden.gateway.config import LoadedConfig, LoggingSection, load_config
from edgewarden.gateway.errors import ConfigError
from edgewarden.gateway.logs import configure_logging
from edgewarden.gateway.ops.reload import changed_keys, validate_reload
from edgewarden.gateway.ops.statusview import render
from edgewarden.gateway.safety.checker import monitored_tags
from tests.helpers import EXAMPLE


def _variant(tmp: Path, name: str, old: str, new: str) -> Path:
    text = EXAMPLE.read_text()
    assert old in text, old
    path = tmp / name
    path.write_text(text.replace(old, new, 1))
    return path


def _base(tmp: Path) -> LoadedConfig:
    """The example, from the same directory as the variants (relative paths resolve alike)."""
    return load_config(_variant(tmp, "base.toml", "", ""))


def test_reloadable_keys_are_accepted(tmp_path: Path) -> None:
    current = _base(tmp_path)
    cand = load_config(_variant(tmp_path, "a.toml", "hard = [290.0, 400.0]", "hard = [290.0, 395.0]"))
    assert validate_reload(current, cand, monitored_tags) == ["safety.limits.T.hard"]
    level = load_config(_variant(tmp_path, "b.toml", 'level = "info"', 'level = "debug"'))
    assert validate_reload(current, level, monitored_tags) == ["logging.level"]
    assert validate_reload(current, _base(tmp_path), monitored_tags) == []


@pytest.mark.parametrize(("old", "new", "key"), [
    ("cycle_hz = 10.0", "cycle_hz = 20.0", "gateway.cycle_hz"),
    ('name = "cstr-1"', 'name = "cstr-2"', "gateway.name"),
    ("port = 9108", "port = 9109", "metrics.port"),
])
def test_other_keys_are_refused_by_name(tmp_path: Path, old: str, new: str, key: str) -> None:
    cand = load_config(_variant(tmp_path, "c.toml", old, new))
    with pytest.raises(ConfigError, match=rf"cannot change while running.*{key}.*nothing was changed"):
        validate_reload(_base(tmp_path), cand, monitored_tags)


def test_changed_keys_are_dotted_paths(tmp_path: Path) -> None:
    cand = load_config(_variant(tmp_path, "d.toml", "hard = [290.0, 400.0]", "hard = [280.0, 400.0]"))
    assert changed_keys(_base(tmp_path).settings, cand.settings) == ["safety.limits.T.hard"]


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_logs_json_off_a_terminal_and_readable_on_one() -> None:
    try:
        out = io.StringIO()
        configure_logging(LoggingSection(format="auto"), stream=out)
        with structlog.contextvars.bound_contextvars(cid="abc123"):
            structlog.get_logger("t").info("mode", target="AUTO")
        line = json.loads(out.getvalue())
        assert line["event"] == "mode" and line["cid"] == "abc123" and line["level"] == "info"
        tty = _Tty()
        configure_logging(LoggingSection(format="auto"), stream=tty)
        structlog.get_logger("t").info("mode", target="AUTO")
        assert "mode" in tty.getvalue() and not tty.getvalue().lstrip().startswith("{")
    finally:
        structlog.reset_defaults()


def test_every_logger_writes_one_json_line_and_no_traceback(restore_logging) -> None:  # noqa: ANN001
    """Ours (structlog and stdlib) and the libraries' (asyncua's "Publish iteration crashed"
    comes with a traceback) alike: one JSON object per line, with time, level, logger, and
    the gateway's cycle and mode; an exception is one field."""
    import logging

    from edgewarden.gateway.logs import get_logger, stamp_context

    out = io.StringIO()
    configure_logging(LoggingSection(format="json"), stream=out)
    stamp_context(lambda: (1234, "AUTO"))
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        logging.getLogger("asyncua.common.subscription").exception("Publish iteration crashed")
    logging.getLogger("edgewarden.thing").warning("plain %s", "text")
    get_logger("edgewarden.test").error("e-stop", code="hard_limit:T:high")
    logging.getLogger("asyncua.client").warning("revised parameter")  # below the libraries' level
    text = out.getvalue()
    assert "Traceback" not in text and "second line" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert [(r["logger"], r["level"], r["event"]) for r in lines] == [
        ("asyncua.common.subscription", "error", "Publish iteration crashed"),
        ("edgewarden.thing", "warning", "plain text"),
        ("edgewarden.test", "error", "e-stop")]
    assert lines[0]["error"] == "RuntimeError: boom"
    for r in lines:
        assert r["cycle"] == 1234 and r["mode"] == "AUTO" and r["timestamp"].endswith("Z")


def test_under_systemd_each_line_carries_its_journald_priority(tmp_path: Path, restore_logging,  # noqa: ANN001
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import logging
    import os

    from edgewarden.gateway.logs import get_logger

    with open(tmp_path / "journal", "w+") as stream:
        st = os.fstat(stream.fileno())
        for journal, prefixes in ((f"{st.st_dev}:{st.st_ino}", ("<3>{", "<6>{", "<4>{")), ("1:2", ("{", "{", "{"))):
            monkeypatch.setenv("JOURNAL_STREAM", journal)
            stream.seek(0)
            stream.truncate()
            configure_logging(LoggingSection(format="json"), stream=stream)
            get_logger("edgewarden").error("e-stop")
            get_logger("edgewarden").info("mode")
            logging.getLogger("pymodbus").warning("x")
            logging.getLogger("pymodbus").error("y")  # the libraries': errors only
            stream.flush()
            lines = (tmp_path / "journal").read_text().splitlines()
            assert [line[:len(p)] for line, p in zip(lines, (*prefixes[:2], prefixes[0]), strict=True)] == \
                [*prefixes[:2], prefixes[0]], lines


def test_status_view_renders_every_part() -> None:
    reply = {"ok": True, "gateway": "cstr-1", "pid": 1, "mode": "ESTOP", "period_s": 0.05, "verdict": "ok",
             "stats": {"cycles": 10, "last_cycle_s": 0.002, "max_cycle_s": 0.004, "max_lateness_s": 0.001},
             "trips": 1, "last_trip": {"code": "hard_limit:T:high", "message": "T too hot", "actor": "gateway"},
             "links": {"plc1": {"connected": True, "reconnects": 0, "rtt_s": 0.001, "last_error": ""}},
             "action": {"feed_flow_sp": 0.0},
             "tags": [{"name": "T", "value": 401.0, "units": "K", "quality": "GOOD", "hard": [290.0, 400.0],
                       "soft": None}]}
    text = render(reply)
    assert "mode ESTOP" in text and "ACTIVE: hard_limit:T:high" in text and "[290, 400]" in text
    assert "plc1: up" in text and "2.00 ms" in text
    assert render({"ok": False, "error": "nope"}) == "status refused: nope"


def test_new_action_bounds_must_still_fit_the_running_model(tmp_path: Path) -> None:
    from tests.helpers import contract

    current = _base(tmp_path)
    text = (tmp_path / "base.toml").read_text()
    old = "max = 200.0\nmax_rate = 50.0"  # [safety.actions.feed_flow_sp]
    assert old in text
    narrow = tmp_path / "narrow.toml"
    narrow.write_text(text.replace(old, "max = 150.0\nmax_rate = 50.0"))
    cand = load_config(narrow)
    assert validate_reload(current, cand, monitored_tags) != []  # fine without a model
    with pytest.raises(ConfigError, match="running model would not fit"):
        validate_reload(current, cand, monitored_tags, contract())
