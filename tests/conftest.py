"""Shared test helpers: locating the reference data in ../shared beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
