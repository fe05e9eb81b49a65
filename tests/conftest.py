"""Shared test configuration. Async tests are ``async def`` functions marked
``@pytest.mark.anyio`` (anyio's pytest plugin), run on asyncio.

Tests marked ``slow`` (long soak and fault runs) run only with EDGEWARDEN_SLOW=1; the
default suite runs their short versions.
"""

from __future__ import annotations

import logging
import os

import pytest
import structlog


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("EDGEWARDEN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set EDGEWARDEN_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio, the gateway's event loop (uvloop is a drop-in of it)."""
    return "asyncio"


@pytest.fixture
def restore_logging():  # noqa: ANN201
    """configure_logging takes over the root logger: give the test run its own back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)
