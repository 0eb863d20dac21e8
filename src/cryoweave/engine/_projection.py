"""Fourier projection (central slices), its exact adjoint (back-projection) and reconstruction.

A volume V `(N, N, N)` (centre N // 2) is divided by the gridding correction, zero padded to
P = round(padding · N) (centre P // 2) and transformed (`rfftn`). Image wave number
k = (kx, ky) samples that transform at q = (P/N) · Aᵀ (kx, ky, 0) by trilinear interpolation,
with V̂(−q) = conj V̂(q) for qx < 0. Pixels with |k| > r_max_px (default N // 2, capped at
(P // 2)·N/P) are zero. Then the CTF multiplies, the RELION origin translates the image (a
particle is its centred projection translated by −origin) and `irfft2` gives
P(x, y) = Σ_z V(Aᵀ (x, y, z)) with the centre at N // 2, odd and even N. (`relion_project`
agrees to 1e-4 for even N; for odd N its images sit one pixel further along +x and +y.)

Trilinear interpolation in Fourier space multiplies the padded real-space volume by
sinc²(x/P)·sinc²(y/P)·sinc²(z/P) (x from the centre, normalised sinc): the gridding correction
divides by it (before projecting; after reconstructing).

`backproject` is the exact adjoint of `project`: ⟨project(x), y⟩ = ⟨x, backproject(y)⟩.
Reconstruction accumulates Σ w·CTF·F̂ and Σ w·CTF² with the same trilinear weights (each image
once per symmetry operator R, at A·Rᵀ) and divides them with a small Wiener-type constant.

Grid layout: the half transform `(P, P, P // 2 + 1)` with z and y centred (slot = wave number +
P // 2), two wrapped copies appended on z and y and a zero column on x: `(P + 2, P + 2,
P // 2 + 2)`, so every trilinear corner exists without index wrapping; back-projection folds
the copies back. On the CPU the scatter-add is SciPy's compiled sparse kernel, fed in slab
order (a linear-time radix sort of 16-bit keys) so it walks the large grid nearly
sequentially, with disjoint slab ranges on parallel threads (`fft_workers()` of them); on the
GPU, `cupyx.scatter_add`.

Backends: images, volumes, CTF images and accumulators must share one backend (a mix raises
TypeError); the small per-image tables (rotation matrices, origins) are taken with
`xp.asarray`, so NumPy ones are accepted for CuPy data.
"""

from __future__ import annotations

import dataclasses
import functools
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

import numpy

from ._backend import array_namespace, fft_workers, to_host
from ._fft import irfft2, irfftn, rfft2, rfftn

_CORNERS = [(dz, dy, dx) for dz in (0, 1) for dy in (0, 1) for dx in (0, 1)]
_CHUNK = 1 << 15  # samples per chunk: keeps the (chunk, 8) temporaries in cache


@dataclasses.dataclass(frozen=True)
class SliceGeometry:
    """Kept pixels (|k| ≤ r_max_px) of an N-box half spectrum, interpolated on a P-point grid."""

    box_px: int
    padded_px: int
    r_max_px: float

    @property
    def scale(self) -> float:
        """Padded-grid voxels per image wave number: P / N."""
        return self.padded_px / self.box_px

    @property
    def extended_shape(self) -> tuple[int, int, int]:
        p = self.padded_px
        return (p + 2, p + 2, p // 2 + 2)

    @functools.cached_property
    def _pixels(self) -> tuple[numpy.ndarray, ...]:
        n, h = self.box_px, self.box_px // 2 + 1
        ky = numpy.arange(n, dtype=numpy.float64)
        ky = numpy.where(ky <= n // 2, ky, ky - n)
        kx = numpy.arange(h, dtype=numpy.float64)
        inside = ky[:, None] ** 2 + kx[None, :] ** 2 <= self.r_max_px**2 + 1e-9
        rows, cols = numpy.nonzero(inside)
        return rows * h + cols, kx[cols], ky[rows], cols, rows

    def pixels(self, xp: ModuleType) -> tuple[Any, ...]:
        """(flat index into (N, N//2+1), kx, ky, column index, row index) of kept pixels."""
        return self._pixels if xp is numpy else _device_tables(self, xp)


@functools.lru_cache(maxsize=8)
def _device_tables(geometry: SliceGeometry, xp: ModuleType) -> tuple[Any, ...]:
    return tuple(xp.asarray(a) for a in geometry._pixels)  # copied to the device once


def slice_geometry(
    box_px: int, padding: float = 2.0, r_max_px: float | None = None
) -> SliceGeometry:
    """Validated `SliceGeometry` for an N-pixel box, padding factor and maximum radius (px)."""
    box_px = int(box_px)
    if box_px < 2:
        raise ValueError(f"box_px={box_px} must be at least 2 pixels")
    if not 1.0 <= float(padding) <= 4.0:
        raise ValueError(f"padding={padding} must be between 1 and 4 (RELION uses 2)")
    padded = round(float(padding) * box_px)
    if (padded + 2) ** 2 * (padded // 2 + 2) >= 2**31:
        raise ValueError(
            f"box_px={box_px} with padding={padding} needs a grid beyond 2³¹ voxels; use a "
            "smaller box (Fourier-crop the images) or padding"
        )
    limit = (padded // 2) * box_px / padded  # keeps every trilinear corner inside the grid
    r_max = box_px // 2 if r_max_px is None else float(r_max_px)
    if not r_max > 0:
        raise ValueError(f"r_max_px={r_max_px} must be positive (Fourier pixels)")
    return SliceGeometry(box_px, padded, min(float(r_max), limit))


def trilinear_gridding_correction(box_px: int, padded_px: int, xp: ModuleType = numpy) -> Any:
    """sinc²(x/P)·sinc²(y/P)·sinc²(z/P) on the N³ box, x from the centre N // 2: `(N, N, N)`
    float64. Dividing by it undoes trilinear interpolation on the P-point grid."""
    s = xp.sinc((xp.arange(box_px, dtype=xp.float64) - box_px // 2) / padded_px) ** 2
    return s[:, None, None] * s[None, :, None] * s[None, None, :]


def _threads(xp: ModuleType) -> int:
    return fft_workers() if xp is numpy else 1


def _run_parallel(tasks: list, n_threads: int) -> None:
    if n_threads <= 1 or len(tasks) <= 1:
        for task in tasks:
            task()
        return
    with ThreadPoolExecutor(n_threads) as pool:
        for future in [pool.submit(task) for task in tasks]:
            future.result()


# ---------------------------------------------------------------- sample records and kernels


def _slab_key_shift(geometry: SliceGeometry) -> int:
    """Bits dropped from y so that the (z, y) slab key fits in 16 bits."""
    e, shift = geometry.extended_shape[1], 0
    while (e - 1) * ((e >> shift) + 1) + (e >> shift) >= 1 << 16:
        shift += 1
    return shift


def _positions(
    geometry: SliceGeometry, matrices: Any, dtype: Any, values: Any = None, extra: Any = None
) -> tuple[Any, Any]:
    """Sample records of the kept pixels (image-major, m = b·p) of orientations `(b, 3, 3)`.

    q = (P/N)·Aᵀ(kx, ky, 0) is mirrored to −q where qx < 0 (such samples take the conjugate).
    Returns (records `(m, 8)` of real `dtype`: lower corner index into the extended grid (int
    bits in column 0), fractions x, y, z, Re value, Im value (conjugated where mirrored),
    `extra`, ±1 (−1 = mirrored); slab keys (m,) uint16: z slab, then coarse y). One record per
    sample lets the slab-order pass fetch it with a single gather.
    """
    xp = array_namespace(matrices)
    n_pixels = len(geometry._pixels[0])
    records = xp.zeros((matrices.shape[0] * n_pixels, 8), dtype=dtype)
    keys = xp.empty(records.shape[0], dtype=xp.uint16)
    # positions in the records' precision: float32 q is exact to ~1e-5 voxel for P ≤ 1024
    a = (matrices[:, :2, :] * geometry.scale).astype(dtype)
    step = max(1, _CHUNK // n_pixels)
    starts = range(0, matrices.shape[0], step)
    tasks = [functools.partial(_fill_records, geometry, records, keys, a, i, i + step, values,
                               extra) for i in starts]
    _run_parallel(tasks, _threads(xp))
    return records, keys


def _fill_records(geometry, records, keys, a, start, stop, values, extra) -> None:
    xp = array_namespace(records)
    _, kx, ky, _, _ = geometry.pixels(xp)
    kx, ky = kx.astype(records.dtype), ky.astype(records.dtype)
    p2, e, hx = geometry.padded_px // 2, geometry.extended_shape[1], geometry.extended_shape[2]
    shift, r = _slab_key_shift(geometry), a[start:stop]
    rows = slice(start * kx.shape[0], (start + r.shape[0]) * kx.shape[0])
    q = [xp.reshape(r[:, 0, j, None] * kx + r[:, 1, j, None] * ky, (-1,)) for j in range(3)]
    sign = xp.where(q[0] < 0, -1.0, 1.0).astype(records.dtype)
    lower = []
    for j in range(3):
        qj = xp.clip(q[j] * sign, -p2, p2)  # |q| ≤ P // 2 up to rounding
        floor = xp.floor(qj)
        lower.append(floor.astype(xp.int32) + (p2 if j else 0))
        records[rows, 1 + j] = qj - floor
    index_view = records[rows, 0].view(xp.int32 if records.itemsize == 4 else xp.int64)
    index_view[:] = (lower[2] * e + lower[1]) * hx + lower[0]
    keys[rows] = lower[2] * ((e >> shift) + 1) + (lower[1] >> shift)
    if values is not None:
        records[rows, 4] = values[rows].real
        records[rows, 5] = values[rows].imag * sign
    if extra is not None:
        records[rows, 6] = extra[rows]
    records[rows, 7] = sign


def _stencils(geometry: SliceGeometry, records: Any) -> tuple[Any, Any]:
    """Trilinear corners `(m, 8)` int32 and weights `(m, 8)` float64 (order of `_CORNERS`)."""
    xp = array_namespace(records)
    e, hx = geometry.extended_shape[1], geometry.extended_shape[2]
    offsets = xp.asarray([(dz * e + dy) * hx + dx for dz, dy, dx in _CORNERS], dtype=xp.int32)
    base = records[:, 0].view(xp.int32 if records.itemsize == 4 else xp.int64)
    corners = base[:, None].astype(xp.int32) + offsets[None, :]
    fx, fy, fz = (records[:, j].astype(xp.float64) for j in (1, 2, 3))
    gx, gy, gz = (1.0 - fx, fx), (1.0 - fy, fy), (1.0 - fz, fz)
    zy = [gz[dz] * gy[dy] for dz in (0, 1) for dy in (0, 1)]
    weights = xp.empty((records.shape[0], 8), dtype=xp.float64)
    for c, (dz, dy, dx) in enumerate(_CORNERS):
        xp.multiply(zy[2 * dz + dy], gx[dx], out=weights[:, c])
    return corners, weights


def _gather(grid_view: Any, corners: Any, weights: Any) -> Any:
    """Σ_c w_c · grid[corner_c] per row: grid_view `(G, k)` real -> `(m, k)`."""
    xp = array_namespace(grid_view)
    if xp is numpy:
        import scipy.sparse

        m = corners.shape[0]
        matrix = scipy.sparse.csr_matrix(
            (weights.astype(grid_view.dtype, copy=False).ravel(), corners.ravel(),
             numpy.arange(0, 8 * m + 1, 8, dtype=corners.dtype)),
            shape=(m, grid_view.shape[0]),
        )
        return matrix @ grid_view
    return xp.einsum("mc,mck->mk", weights.astype(grid_view.dtype), grid_view[corners])


@functools.cache
def _csc_matvecs() -> Any:
    # SciPy's compiled Y += Aᵀ·X kernel, in place and without the GIL (the public `A.T @ X`
    # allocates Y on every call, which costs more than the scatter); absent -> numpy.add.at.
    try:
        from scipy.sparse import _sparsetools

        return _sparsetools.csc_matvecs
    except (ImportError, AttributeError):
        return None


def _scatter(accumulator: Any, corners: Any, weights: Any, values: Any) -> None:
    """accumulator[corner_c] += w_c · values, in place: accumulator `(G, k)` float64."""
    xp = array_namespace(accumulator)
    m, k = values.shape
    if xp is numpy and _csc_matvecs() is not None:
        pointers = numpy.arange(0, 8 * m + 1, 8, dtype=corners.dtype)
        _csc_matvecs()(accumulator.shape[0], m, k, pointers, corners.ravel(), weights.ravel(),
                       numpy.ascontiguousarray(values).ravel(), accumulator.reshape(-1))
        return
    for column in range(k):
        contribution = (weights * values[:, column, None]).ravel()
        if xp is numpy:
            numpy.add.at(accumulator[:, column], corners.ravel(), contribution)
        else:
            import cupyx

            cupyx.scatter_add(accumulator.reshape(-1), corners.ravel() * k + column, contribution)


def _interpolate(geometry: SliceGeometry, grid_view: Any, matrices: Any) -> Any:
    """Trilinear samples `(b·p, 2)` (Re, Im; conjugated where mirrored) of the extended grid
    (as `(G, 2)` real) at the kept pixels of orientations `(b, 3, 3)`, image-major."""
    xp = array_namespace(grid_view)
    records, _ = _positions(geometry, matrices, grid_view.dtype)
    out = xp.empty((records.shape[0], 2), dtype=grid_view.dtype)
    for s in range(0, records.shape[0], _CHUNK):
        chunk = slice(s, s + _CHUNK)
        out[chunk] = _gather(grid_view, *_stencils(geometry, records[chunk]))
    out[:, 1] *= records[:, 7]
    return out


def _splat(geometry: SliceGeometry, accumulator: Any, matrices: Any, values: Any,
           extra: Any = None) -> None:
    """Adjoint of `_interpolate`: accumulator `(G, 2 | 3)` float64 += the trilinear spread of
    complex `values` (b·p,) (conjugated where mirrored) and of the real `extra` (b·p,)."""
    xp = array_namespace(accumulator)
    records, keys = _positions(geometry, matrices, values.real.dtype, values, extra)
    # slab order for the CPU caches; GPU atomics need none
    order = xp.argsort(keys, kind="stable") if xp is numpy else xp.arange(keys.shape[0])
    k = accumulator.shape[1]

    def scatter_range(start: int, stop: int) -> None:
        for s in range(start, stop, _CHUNK):
            chunk = xp.take(records, order[s : min(stop, s + _CHUNK)], axis=0)
            corners, weights = _stencils(geometry, chunk)
            _scatter(accumulator, corners, weights, chunk[:, 4 : 4 + k].astype(xp.float64))

    # Threads take disjoint z-slab ranges; samples whose two z layers straddle a split go last.
    n_threads = _threads(xp)
    if n_threads <= 1 or order.shape[0] < 4 * _CHUNK:
        scatter_range(0, order.shape[0])
        return
    per_slab = (geometry.extended_shape[1] >> _slab_key_shift(geometry)) + 1
    slab = keys[order] // per_slab
    quantiles = (order.shape[0] * numpy.arange(1, n_threads)) // n_threads
    splits = [int(v) for v in numpy.unique(to_host(slab[xp.asarray(quantiles)])) if v > 0]
    bounds = [0]
    for split in splits:  # [first sample of slab split − 1, first sample of slab split]
        bounds += [int(xp.searchsorted(slab, split - 1)), int(xp.searchsorted(slab, split))]
    bounds.append(order.shape[0])
    ranges = [(bounds[2 * i], bounds[2 * i + 1]) for i in range(len(splits) + 1)]
    _run_parallel([functools.partial(scatter_range, *r) for r in ranges], n_threads)
    for i in range(1, len(splits) + 1):
        scatter_range(bounds[2 * i - 1], bounds[2 * i])


def extend_grid(half: Any) -> Any:
    """FFT-layout half transform `(P, P, P//2+1)` -> extended centred grid (module notes)."""
    xp = array_namespace(half)
    p = half.shape[0]
    out = xp.zeros((p + 2, p + 2, p // 2 + 2), dtype=half.dtype)
    out[:p, :p, : p // 2 + 1] = xp.roll(half, (p // 2, p // 2), axis=(0, 1))
    out[p:, :p] = out[:2, :p]
    out[:, p:] = out[:, :2]
    return out


def fold_grid(extended: Any) -> Any:
    """Adjoint of `extend_grid`: sums the wrapped copies back; `(P, P, P//2+1, ...)`."""
    xp = array_namespace(extended)
    p = extended.shape[0] - 2
    grid = extended[:, :, : p // 2 + 1].copy()
    grid[:, :2] += grid[:, p:]
    grid = grid[:, :p]
    grid[:2] += grid[p:]
    return xp.roll(grid[:p], (-(p // 2), -(p // 2)), axis=(0, 1))


# ---------------------------------------------------------------- per-image factors


def _phase_factors(geometry: SliceGeometry, origin_xy_px: Any, b: int, xp: ModuleType,
                   dtype: Any) -> Any:
    """exp(−2πi k·(c − origin)/N) at the kept pixels `(b, p)`: centre c = N // 2, and the
    particle is the centred image translated by −origin (RELION's origin convention)."""
    n = geometry.box_px
    _, _, _, columns, rows = geometry.pixels(xp)
    shift = xp.full((b, 2), float(n // 2))
    if origin_xy_px is not None:
        shift = shift - xp.reshape(xp.asarray(origin_xy_px, dtype=xp.float64), (b, 2))
    k = xp.arange(n, dtype=xp.float64)
    ky = xp.where(k <= n // 2, k, k - n)
    phase_x = xp.exp((-2j * numpy.pi / n) * shift[:, 0, None] * k[: n // 2 + 1]).astype(dtype)
    phase_y = xp.exp((-2j * numpy.pi / n) * shift[:, 1, None] * ky).astype(dtype)
    return phase_x[:, columns] * phase_y[:, rows]


def _at_pixels(geometry: SliceGeometry, array: Any, b: int, xp: ModuleType) -> Any:
    """Values `(b, p)` at the kept pixels of half-spectrum arrays `(b | 1, N, N//2+1)`."""
    flat, *_ = geometry.pixels(xp)
    arr = xp.reshape(xp.asarray(array), (-1, geometry.box_px * (geometry.box_px // 2 + 1)))
    if arr.shape[0] not in (1, b):
        raise ValueError(
            f"got {arr.shape[0]} CTF images for {b} images; pass one per image `(n, N, N//2+1)` "
            "or one shared `(N, N//2+1)` array"
        )
    return xp.broadcast_to(arr[:, flat], (b, flat.shape[0]))


def _batch_ctf(ctf: Any, start: int, stop: int) -> Any:
    return ctf if ctf.ndim == 2 else ctf[start:stop]


def _check_ctf(ctf: Any | None, data: Any) -> None:
    """CTF images must live with the data: array_namespace raises TypeError on a mix."""
    if ctf is not None:
        array_namespace(ctf, data)


def _check_matrices(matrices: Any, xp: ModuleType) -> Any:
    matrices = xp.asarray(matrices, dtype=xp.float64)
    if matrices.ndim != 3 or matrices.shape[1:] != (3, 3):
        raise ValueError(
            f"rotation matrices must be (n, 3, 3); got {tuple(matrices.shape)} "
            "(use euler_to_matrix(rot, tilt, psi))"
        )
    return matrices


def _batch_size(geometry: SliceGeometry, n: int, batch_size: int | None) -> int:
    if batch_size is not None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1")
        return int(batch_size)
    return max(1, min(n, int(2.5e8 // (len(geometry._pixels[0]) * 96))))  # ≈ 96 B per sample


def _real_dtype(xp: ModuleType, dtype: Any) -> Any:
    return xp.float64 if dtype in (xp.float64, xp.complex128) else xp.float32


def _column_multiplicity(size: int, xp: ModuleType) -> Any:
    """How often each rfft column stands for itself and its mirror: 1 at 0 (and N/2), else 2."""
    c = xp.full(size // 2 + 1, 2.0)
    c[0] = 1.0
    if size % 2 == 0:
        c[-1] = 1.0
    return c


# ---------------------------------------------------------------- projection


@dataclasses.dataclass(frozen=True)
class Projector:
    """A volume prepared for projection: its padded, gridding-corrected half transform on the
    extended grid (module notes). Build with `from_volume`, then call `project` per batch."""

    geometry: SliceGeometry
    grid: Any

    @classmethod
    def from_volume(
        cls, volume: Any, *, padding: float = 2.0, r_max_px: float | None = None
    ) -> Projector:
        """volume: `(N, N, N)` float32 (float64 stays float64), centre at N // 2."""
        xp = array_namespace(volume)
        if volume.ndim != 3 or len(set(volume.shape)) != 1:
            raise ValueError(f"volume must be a cubic (N, N, N) array; got {volume.shape}")
        geometry = slice_geometry(volume.shape[0], padding, r_max_px)
        n, p = geometry.box_px, geometry.padded_px
        padded = xp.zeros((p, p, p), dtype=_real_dtype(xp, volume.dtype))
        window = (xp.arange(n) - n // 2) % p  # centre N // 2 -> index 0 (FFT origin)
        padded[xp.ix_(window, window, window)] = volume / trilinear_gridding_correction(n, p, xp)
        return cls(geometry, extend_grid(rfftn(padded, ndim=3)))

    def project(
        self,
        matrices: Any,
        *,
        origin_xy_px: Any | None = None,
        ctf: Any | None = None,
        spectra: bool = False,
        batch_size: int | None = None,
    ) -> Any:
        """Projections `(n, N, N)` (real, the volume's dtype) at orientations `(n, 3, 3)`.

        origin_xy_px: `(n, 2)` RELION origins in pixels (rlnOriginX/YAngst / pixel size); each
        image is its centred projection translated by −origin. ctf: `(n, N, N//2+1)` or shared
        `(N, N//2+1)` CTF on the rfft2 grid (`ctf_2d`), multiplied in. spectra=True returns the
        half spectra `(n, N, N//2+1)` complex instead (rfft2 of the images).
        """
        xp = array_namespace(self.grid)
        matrices = _check_matrices(matrices, xp)
        _check_ctf(ctf, self.grid)
        geometry, n_img = self.geometry, matrices.shape[0]
        n, h = geometry.box_px, geometry.box_px // 2 + 1
        flat, *_ = geometry.pixels(xp)
        view = self.grid.view(_real_dtype(xp, self.grid.dtype)).reshape(-1, 2)
        out = xp.zeros((n_img, n * h), dtype=self.grid.dtype)
        step = _batch_size(geometry, n_img, batch_size)
        for start in range(0, n_img, step):
            stop = min(n_img, start + step)
            pair = _interpolate(geometry, view, matrices[start:stop])
            values = (pair[:, 0] + 1j * pair[:, 1]).astype(self.grid.dtype)
            values = values.reshape(stop - start, -1)
            origins = None if origin_xy_px is None else origin_xy_px[start:stop]
            values *= _phase_factors(geometry, origins, stop - start, xp, values.dtype)
            if ctf is not None:
                values *= _at_pixels(geometry, _batch_ctf(ctf, start, stop), stop - start, xp)
            out[start:stop, flat] = values
        out = out.reshape(n_img, n, h)
        return out if spectra else irfft2(out, (n, n))


def project(
    volume: Any,
    matrices: Any,
    *,
    padding: float = 2.0,
    origin_xy_px: Any | None = None,
    ctf: Any | None = None,
    spectra: bool = False,
    r_max_px: float | None = None,
    batch_size: int | None = None,
) -> Any:
    """Project a volume `(N, N, N)` at orientations `(n, 3, 3)` into images `(n, N, N)`.

    `Projector.from_volume(volume, padding=…).project(matrices, …)` in one call; see there and
    the module notes for the conventions.
    """
    projector = Projector.from_volume(volume, padding=padding, r_max_px=r_max_px)
    return projector.project(matrices, origin_xy_px=origin_xy_px, ctf=ctf, spectra=spectra,
                             batch_size=batch_size)


def backproject(
    images: Any,
    matrices: Any,
    *,
    padding: float = 2.0,
    origin_xy_px: Any | None = None,
    ctf: Any | None = None,
    r_max_px: float | None = None,
    batch_size: int | None = None,
) -> Any:
    """Exact adjoint of `project` (same arguments): images `(n, N, N)` -> volume `(N, N, N)`.

    ⟨project(x, A, …), y⟩ = ⟨x, backproject(y, A, …)⟩ for real x, y. Sums in float64; returns
    the images' float dtype. Reconstruction (CTF weights, division) is
    `ReconstructionAccumulator`.
    """
    xp = array_namespace(images)
    real = _real_dtype(xp, images.dtype)
    matrices = _check_matrices(matrices, xp)
    _check_ctf(ctf, images)
    geometry = slice_geometry(images.shape[-1], padding, r_max_px)
    n, p = geometry.box_px, geometry.padded_px
    # adjoint of irfft2: rfft2 with each column weighted by its multiplicity, / N²
    spectra = rfft2(xp.asarray(images, dtype=real)) * (_column_multiplicity(n, xp) / n**2)
    accumulator = xp.zeros((int(numpy.prod(geometry.extended_shape)), 2), dtype=xp.float64)
    step = _batch_size(geometry, matrices.shape[0], batch_size)
    for start in range(0, matrices.shape[0], step):
        stop = min(matrices.shape[0], start + step)
        values = _at_pixels(geometry, spectra[start:stop], stop - start, xp)
        origins = None if origin_xy_px is None else origin_xy_px[start:stop]
        values = values * xp.conj(_phase_factors(geometry, origins, stop - start, xp,
                                                 values.dtype))
        if ctf is not None:
            values = values * _at_pixels(geometry, _batch_ctf(ctf, start, stop), stop - start, xp)
        _splat(geometry, accumulator, matrices[start:stop], xp.reshape(values, (-1,)))
    folded = fold_grid(accumulator.reshape(*geometry.extended_shape, 2))
    half = (folded[..., 0] + 1j * folded[..., 1]) / _column_multiplicity(p, xp)
    padded = irfftn(half, (p, p, p))
    window = (xp.arange(n) - n // 2) % p  # adjoint of the centred zero padding
    volume = padded[window][:, window][:, :, window] * float(p) ** 3
    return (volume / trilinear_gridding_correction(n, p, xp)).astype(real)


# ---------------------------------------------------------------- reconstruction


@dataclasses.dataclass
class ReconstructionAccumulator:
    """Sums Σ w·CTF·F̂ (data) and Σ w·CTF² (weights) of inserted images on the padded grid.

    One per half set (`half` 1 or 2): `empty`, `insert` batches, add accumulators (`a + b`:
    batches, workers, or both halves, which gives `half=None`), then `reconstruct()`. `sums` is
    the extended grid (module notes) as `(G, 3)` float64 columns (Re data, Im data, weight);
    `data_and_weight` gives them on the plain half grid.
    """

    geometry: SliceGeometry
    sums: Any
    n_images: int = 0
    half: int | None = None

    @classmethod
    def empty(cls, box_px: int, *, padding: float = 2.0, r_max_px: float | None = None,
              half: int | None = None, xp: ModuleType = numpy) -> ReconstructionAccumulator:
        """Zero sums for N = box_px images (odd or even) on a round(padding·N) grid."""
        if half not in (None, 1, 2):
            raise ValueError(f"half={half!r} must be 1, 2 or None (both halves)")
        geometry = slice_geometry(box_px, padding, r_max_px)
        size = int(numpy.prod(geometry.extended_shape))
        return cls(geometry, xp.zeros((size, 3), dtype=xp.float64), 0, half)

    def insert(
        self,
        images: Any,
        matrices: Any,
        *,
        ctf: Any | None = None,
        origin_xy_px: Any | None = None,
        symmetry: str = "c1",
        particle_weights: Any | None = None,
        batch_size: int | None = None,
    ) -> None:
        """Back-project images `(n, N, N)` at orientations `(n, 3, 3)` into the sums (in place).

        origin_xy_px `(n, 2)`: RELION origins in pixels; images are translated by +origin.
        ctf: `(n, N, N//2+1)` or shared `(N, N//2+1)` rfft2-grid CTF (`ctf_2d`; |CTF| for
        phase-flipped particles); None means CTF = 1. symmetry: each image is inserted once per
        operator R, at A·Rᵀ (R on the left of Aᵀ). particle_weights `(n,)` scale both sums.
        """
        from ._symmetry import symmetry_matrices

        xp = array_namespace(self.sums, images)
        matrices = _check_matrices(matrices, xp)
        _check_ctf(ctf, images)
        geometry, n_img = self.geometry, matrices.shape[0]
        if images.ndim != 3 or images.shape[1:] != (geometry.box_px,) * 2:
            raise ValueError(
                f"images must be (n, {geometry.box_px}, {geometry.box_px}) to match the "
                f"accumulator; got {tuple(images.shape)}"
            )
        if images.shape[0] != n_img:
            raise ValueError(f"got {images.shape[0]} images but {n_img} orientations")
        operators = xp.swapaxes(symmetry_matrices(symmetry, xp=xp), 1, 2)  # Rᵀ
        step = _batch_size(geometry, n_img, batch_size)
        for start in range(0, n_img, step):
            stop = min(n_img, start + step)
            values, weight = self._weighted_values(images, start, stop, ctf, origin_xy_px,
                                                   particle_weights)
            for op in operators:
                _splat(geometry, self.sums, matrices[start:stop] @ op, values, weight)
        self.n_images += n_img

    def _weighted_values(self, images, start, stop, ctf, origin_xy_px, particle_weights):
        """(CTF·F̂ centred and shifted by +origin (b·p,) complex, CTF² (b·p,) real)."""
        xp, geometry, b = array_namespace(self.sums), self.geometry, stop - start
        spectra = rfft2(images[start:stop])
        real = _real_dtype(xp, spectra.dtype)
        origins = None if origin_xy_px is None else origin_xy_px[start:stop]
        values = _at_pixels(geometry, spectra, b, xp)
        values = values * xp.conj(_phase_factors(geometry, origins, b, xp, spectra.dtype))
        weight = xp.ones(values.shape, dtype=real)
        if ctf is not None:
            ctf_b = _at_pixels(geometry, _batch_ctf(ctf, start, stop), b, xp).astype(real)
            values, weight = values * ctf_b, ctf_b * ctf_b
        if particle_weights is not None:
            scale = xp.asarray(particle_weights, dtype=real)[start:stop, None]
            values, weight = values * scale, weight * scale
        return xp.reshape(values, (-1,)), xp.reshape(weight, (-1,))

    def __add__(self, other: ReconstructionAccumulator) -> ReconstructionAccumulator:
        if not isinstance(other, ReconstructionAccumulator):
            return NotImplemented
        if other.geometry != self.geometry:
            raise ValueError(
                f"cannot add accumulators of different grids ({self.geometry} and "
                f"{other.geometry}); use the same box_px, padding and r_max_px"
            )
        half = self.half if self.half == other.half else None
        return ReconstructionAccumulator(self.geometry, self.sums + other.sums,
                                         self.n_images + other.n_images, half)

    def data_and_weight(self) -> tuple[Any, Any]:
        """(Σ w·CTF·F̂ complex128, Σ w·CTF² float64), both `(P, P, P//2+1)` in FFT layout."""
        sums = self.sums.reshape(*self.geometry.extended_shape, 3)
        data = fold_grid(sums[..., 0]) + 1j * fold_grid(sums[..., 1])
        return data, fold_grid(sums[..., 2])

    def reconstruct(self, *, regularization: float = 1e-3,
                    gridding_correction: bool = True) -> Any:
        """The map `(N, N, N)` float32: F̂ = data / (weight + λ), inverse FFT, crop, and divide
        by the trilinear sinc² (`gridding_correction`).

        λ = regularization × (mean weight over sampled voxels): a Wiener-type constant that
        only matters where the weight is far below average (edges of the sampled region, CTF
        zeros, missing views); unsampled voxels stay 0.
        """
        if not regularization >= 0:
            raise ValueError(f"regularization={regularization} must be ≥ 0 (e.g. 1e-3)")
        xp = array_namespace(self.sums)
        data, weight = self.data_and_weight()
        sampled = weight > 0
        if not bool(xp.any(sampled)):
            raise ValueError("the accumulator is empty; insert images before reconstructing")
        lam = regularization * float(xp.mean(weight[sampled]))
        weight += lam
        weight[~sampled] = xp.inf  # unsampled voxels stay 0
        data /= weight
        del weight, sampled
        n, p = self.geometry.box_px, self.geometry.padded_px
        padded = irfftn(data.astype(xp.complex64), (p, p, p))  # the map is float32 anyway
        del data
        window = (xp.arange(n) - n // 2) % p  # centre N // 2 <- padded index 0
        volume = padded[window][:, window][:, :, window].astype(xp.float64)
        if gridding_correction:
            volume = volume / trilinear_gridding_correction(n, p, xp)
        return volume.astype(xp.float32)


def reconstruct(
    images: Any,
    matrices: Any,
    *,
    ctf: Any | None = None,
    origin_xy_px: Any | None = None,
    symmetry: str = "c1",
    padding: float = 2.0,
    regularization: float = 1e-3,
    batch_size: int | None = None,
) -> Any:
    """Reconstruct a map `(N, N, N)` float32 from images `(n, N, N)` at known orientations.

    `ReconstructionAccumulator.empty(…).insert(…)` then `.reconstruct(…)` in one call.
    """
    xp = array_namespace(images)
    accumulator = ReconstructionAccumulator.empty(images.shape[-1], padding=padding, xp=xp)
    accumulator.insert(images, matrices, ctf=ctf, origin_xy_px=origin_xy_px,
                       symmetry=symmetry, batch_size=batch_size)
    return accumulator.reconstruct(regularization=regularization)
