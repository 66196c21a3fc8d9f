"""Shared fixtures. Every async test is checked for leaked tasks at teardown."""
from __future__ import annotations

import pytest

from runtime.testing import assert_no_leaked_tasks


@pytest.fixture(autouse=True)
async def _no_leaked_tasks():
    yield
    await assert_no_leaked_tasks()
