"""Shared test helpers: locating the reference data in ../shared beside the checkout, tiny random batches."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"


def require_shared(relative: str) -> Path:
    """Path of a file under ../shared; skipped when absent locally, a failure in CI (where it must be present)."""
    path = SHARED / relative
    if not path.exists():
        message = f"{path} is missing: the tests expect the project's shared/ folder beside the checkout"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def one_thread():
    """Run a test on one torch thread: one float reduction order, so results repeat exactly."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_batch(size: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random batch for the tiny test networks: 9 tokens from a vocabulary of 6, puzzle ids from 3."""
    g = torch.Generator().manual_seed(seed)
    return {
        "inputs": torch.randint(1, 6, (size, 9), generator=g),
        "labels": torch.randint(2, 6, (size, 9), generator=g),
        "puzzle_ids": torch.randint(0, 3, (size,), generator=g),
    }
