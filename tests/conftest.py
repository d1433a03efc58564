"""Shared fixtures: the real-data folder and small synthetic datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NCF_DATA_DIR") or REPO.parent / "shared" / "data")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder holding ml-100k/ and ncf-ml-1m/; tests that need it skip without it."""
    if not (SHARED_DATA / "ml-100k" / "u.data").is_file():
        pytest.skip(f"real data not found under {SHARED_DATA}")
    os.environ.setdefault("NCF_DATA_DIR", str(SHARED_DATA))
    return SHARED_DATA


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: one intra-op thread avoids spin-waiting when the machine is shared
    (use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
