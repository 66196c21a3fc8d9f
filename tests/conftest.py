"""Shared fixtures. Every async test is checked for leaked tasks at teardown."""
from __future__ import annotations

import os

import pytest
import torch

from pat_runtime.signing import generate_key
from pat_runtime.testing import assert_no_leaked_tasks


@pytest.fixture(scope="session", autouse=True)
def _pat_home(tmp_path_factory):
    """Keys live in a temporary PAT_HOME (never the user's): one signing key, trusted there, as after
    `pat keys create`. Child processes (edges, CLI runs) inherit it."""
    home = tmp_path_factory.mktemp("pat_home")
    old = os.environ.get("PAT_HOME")
    os.environ["PAT_HOME"] = str(home)
    generate_key(home)
    yield home
    if old is None:
        os.environ.pop("PAT_HOME", None)
    else:
        os.environ["PAT_HOME"] = old


@pytest.fixture(autouse=True)
async def _no_leaked_tasks():
    yield
    await assert_no_leaked_tasks()


@pytest.fixture
def one_torch_thread():
    """torch on one intra-op thread for the test (fits on a shared 2-core machine), restored after."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
