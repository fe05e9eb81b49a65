"""Shared test helpers. Async tests run with asyncio.run inside plain test functions."""
from __future__ import annotations
