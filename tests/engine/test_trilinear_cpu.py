"""The compiled CPU trilinear kernels (`_trilinear_cpu`): the gather behind
`_slicing._interpolate` and the scatter-add behind `_slicing._splat`, against direct NumPy
versions of the same stencils, and their independence of the thread count."""

from __future__ import annotations

import numpy as np
import pytest

from cryoweave.engine._backend import FFT_WORKERS_ENV_VAR
from cryoweave.engine._geometry import euler_to_matrix
from cryoweave.engine._slicing import (
    _gather,
    _interpolate,
    _positions,
    _splat,
    _stencils,
    slice_geometry,
)


def _orientations(n: int, rng: np.random.Generator) -> np.ndarray:
    tilt = np.degrees(np.arccos(rng.uniform(-1, 1, n)))
    matrices = euler_to_matrix(rng.uniform(-180, 180, n), tilt, rng.uniform(-180, 180, n))
    # on-grid orientations put samples exactly on voxel faces and at the ±P/2 clip
    matrices[0] = np.eye(3)
    matrices[1] = euler_to_matrix(np.array([90.0]), np.array([90.0]), np.array([0.0]))[0]
    matrices[2] = euler_to_matrix(np.array([0.0]), np.array([180.0]), np.array([45.0]))[0]
    return matrices


def _samples(box: int, padding: float, n: int, dtype: type, with_extra: bool, seed: int):
    rng = np.random.default_rng(seed)
    geometry = slice_geometry(box, padding, None)
    m = n * len(geometry._pixels[0])
    values = (rng.standard_normal(m) + 1j * rng.standard_normal(m)).astype(dtype)
    extra = rng.random(m).astype(values.real.dtype) if with_extra else None
    return geometry, _orientations(n, rng), values, extra


def _direct_scatter(geometry, matrices, values, extra) -> np.ndarray:
    """The same stencils scattered with numpy.add.at, image-major (another summation order)."""
    records = _positions(geometry, matrices, values.real.dtype, values, extra)
    corners, weights = _stencils(geometry, records)
    columns = 2 if extra is None else 3
    sums = np.zeros((int(np.prod(geometry.extended_shape)), columns))
    for column in range(columns):
        np.add.at(sums[:, column], corners.ravel(),
                  (weights * records[:, 4 + column, None].astype(np.float64)).ravel())
    return sums


def _compiled_scatter(geometry, matrices, values, extra) -> np.ndarray:
    sums = np.zeros((int(np.prod(geometry.extended_shape)), 2 if extra is None else 3))
    _splat(geometry, sums, matrices, values, extra)
    return sums


@pytest.mark.parametrize("box, padding, dtype, with_extra", [
    (16, 2.0, np.complex64, True),  # reconstruction: data and CTF² weights, float32 images
    (17, 2.0, np.complex128, True),  # odd box, float64 images
    (12, 1.5, np.complex64, False),  # back-projection (`Projector`'s adjoint): data only
    (9, 1.0, np.complex128, False),
])
def test_compiled_scatter_equals_a_direct_scatter(box, padding, dtype, with_extra):
    geometry, matrices, values, extra = _samples(box, padding, 40, dtype, with_extra, box)
    expected = _direct_scatter(geometry, matrices, values, extra)
    got = _compiled_scatter(geometry, matrices, values, extra)
    assert np.count_nonzero(expected) > 0.1 * expected.size
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_sums_do_not_depend_on_the_thread_count(monkeypatch, dtype):
    geometry, matrices, values, extra = _samples(24, 2.0, 60, dtype, True, 5)
    results = []
    for threads in (1, 2, 3, 7):
        monkeypatch.setenv(FFT_WORKERS_ENV_VAR, str(threads))
        results.append(_compiled_scatter(geometry, matrices, values, extra))
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])


def _grid(geometry, dtype: type, seed: int) -> np.ndarray:
    """A random extended grid as `(G, 2)` real (Re, Im) of the samples' precision."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(geometry.extended_shape))
    return rng.standard_normal((size, 2)).astype(np.dtype(dtype).type(0).real.dtype)


@pytest.mark.parametrize("box, padding, dtype", [
    (16, 2.0, np.complex64), (17, 2.0, np.complex128), (12, 1.5, np.complex64),
    (9, 1.0, np.complex128)])
def test_compiled_gather_equals_a_direct_gather(box, padding, dtype):
    geometry, matrices, _, _ = _samples(box, padding, 40, dtype, False, box)
    grid = _grid(geometry, dtype, box)
    records = _positions(geometry, matrices, grid.dtype)
    expected = _gather(grid, *_stencils(geometry, records))  # NumPy einsum over the 8 corners
    expected[:, 1] *= records[:, 7]
    got = _interpolate(geometry, grid, matrices)
    assert got.dtype == grid.dtype
    tolerance = 1e-5 if grid.dtype == np.float32 else 1e-13
    np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_gather_does_not_depend_on_the_thread_count(monkeypatch, dtype):
    geometry, matrices, _, _ = _samples(24, 2.0, 61, dtype, False, 6)
    grid = _grid(geometry, dtype, 6)
    results = []
    for threads in (1, 2, 3, 7):
        monkeypatch.setenv(FFT_WORKERS_ENV_VAR, str(threads))
        results.append(_interpolate(geometry, grid, matrices))
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])
