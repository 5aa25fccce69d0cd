"""Session-wide test settings: seeded RNG, float64 by default for the numerics."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("LEE_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".cache", "lee-tests"))
# No test reaches the real Hugging Face hub: `--weights auto` sees the hub offline (cached weights or random
# init), and the hub tests serve their own checkpoints on the loopback address (tests/hub_server.py).
os.environ["HF_HUB_OFFLINE"] = "1"
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(params=[torch.float32, torch.float64], ids=["f32", "f64"])
def dtype(request) -> torch.dtype:
    return request.param


def tolerance(dtype: torch.dtype) -> float:
    """Relative tolerance of a derivative computed in ``dtype``."""
    return 1e-9 if dtype == torch.float64 else 2e-3
