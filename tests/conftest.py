"""Shared fixtures: the array namespace `xp` and the real-data folder."""

from __future__ import annotations

from pathlib import Path

import numpy
import pytest

from cryoweave.engine import cupy_available


def _namespaces() -> list:
    params = [pytest.param(numpy, id="numpy")]
    if cupy_available():
        import cupy

        params.append(pytest.param(cupy, id="cupy", marks=pytest.mark.gpu))
    return params


@pytest.fixture(params=_namespaces())
def xp(request: pytest.FixtureRequest):
    """The array module under test: numpy always, cupy (marked `gpu`) when a GPU is usable."""
    return request.param


@pytest.fixture
def real_data_dir() -> Path:
    """`../shared/data/real` next to the project root (files written by other tools)."""
    path = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
    if not path.is_dir():
        pytest.skip(f"real-data fixtures not found at {path}")
    return path
