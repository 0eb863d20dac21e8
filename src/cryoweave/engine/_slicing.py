"""Central slices on the padded Fourier grid: geometry, grid layout, trilinear kernels and the
per-image factors shared by projection (`_projection`) and reconstruction (`_reconstruction`).

An N-pixel image's half spectrum keeps the pixels with |k| ≤ r_max_px (`SliceGeometry`); at
orientation A, wave number k = (kx, ky) sits at q = (P/N) · Aᵀ (kx, ky, 0) on the P-point grid
(P = round(padding · N)), mirrored to −q (conjugate value) where qx < 0. A `PixelSubset` keeps
only some of those pixels, in a caller's order (the alignment's band: `Projector.sample`).

Grid layout: the half transform `(P, P, P // 2 + 1)` with z and y centred (slot = wave number +
P // 2), two wrapped copies appended on z and y and a zero column on x: `(P + 2, P + 2,
P // 2 + 2)`, so every trilinear corner exists without index wrapping; `fold_grid` sums the
copies back. On the CPU the gather and the scatter-add are compiled (`_trilinear_cpu`,
Numba); the scatter takes the samples in slab order (a counting sort of (z, coarse y) keys) so
that it walks the large grid nearly sequentially, the grid's z ranges on parallel threads
(`fft_workers()` of them), with the same sums for any thread count. On the GPU they run on the
sample records (`_positions`, `_stencils`) with `cupyx.scatter_add`.

Backends: images, volumes, CTF images and accumulators must share one backend (a mix raises
TypeError); the small per-image tables (rotation matrices, origins) are taken with
`xp.asarray`, so NumPy ones are accepted for CuPy data.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

import numpy

from ._backend import array_namespace, fft_workers
from ._fft import fft_wave_numbers

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
        ky = fft_wave_numbers(n)
        kx = fft_wave_numbers(n, rfft=True)
        inside = ky[:, None] ** 2 + kx[None, :] ** 2 <= self.r_max_px**2 + 1e-9
        rows, cols = numpy.nonzero(inside)
        return rows * h + cols, kx[cols], ky[rows], cols, rows

    def pixels(self, xp: ModuleType) -> tuple[Any, ...]:
        """(flat index into (N, N//2+1), kx, ky, column index, row index) of kept pixels."""
        return self._pixels if xp is numpy else _device_tables(self, xp)


@dataclasses.dataclass(frozen=True)
class PixelSubset(SliceGeometry):
    """Some kept pixels of a `SliceGeometry`, in a caller's order: `flat` indexes the
    `(N, N//2+1)` half spectrum. Kernels given one sample only those pixels (e.g. a matching
    band: `pixel_subset`)."""

    flat: tuple[int, ...] = ()

    @functools.cached_property
    def _pixels(self) -> tuple[numpy.ndarray, ...]:
        h = self.box_px // 2 + 1
        flat = numpy.asarray(self.flat, dtype=numpy.int64)
        rows, cols = flat // h, flat % h
        ky = fft_wave_numbers(self.box_px)[rows]
        kx = fft_wave_numbers(self.box_px, rfft=True)[cols]
        return flat, kx, ky, cols, rows


def pixel_subset(geometry: SliceGeometry, flat: Any) -> PixelSubset:
    """The pixels `flat` (host ints into the `(N, N//2+1)` half spectrum) of `geometry`, in
    that order; ValueError for one outside its radius (its trilinear corners would leave the
    grid)."""
    flat = numpy.asarray(flat, dtype=numpy.int64).ravel()
    n, h = geometry.box_px, geometry.box_px // 2 + 1
    inside = numpy.zeros(n * h, dtype=bool)
    inside[geometry._pixels[0]] = True
    outside = (flat < 0) | (flat >= n * h)
    outside[~outside] = ~inside[flat[~outside]]
    if outside.any():
        raise ValueError(
            f"pixel {int(flat[numpy.argmax(outside)])} of the half spectrum is outside the "
            f"projector's radius ({geometry.r_max_px} px); build the Projector with a larger "
            "r_max_px"
        )
    return PixelSubset(n, geometry.padded_px, geometry.r_max_px, tuple(flat.tolist()))


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
    """Bits dropped from y so that there are at most 2¹⁶ (z, coarse y) slab keys."""
    e, shift = geometry.extended_shape[1], 0
    while (e - 1) * ((e >> shift) + 1) + (e >> shift) >= 1 << 16:
        shift += 1
    return shift


def _positions(
    geometry: SliceGeometry, matrices: Any, dtype: Any, values: Any = None, extra: Any = None
) -> Any:
    """Sample records of the kept pixels (image-major, m = b·p) of orientations `(b, 3, 3)`.

    q = (P/N)·Aᵀ(kx, ky, 0) is mirrored to −q where qx < 0 (such samples take the conjugate).
    Returns records `(m, 8)` of real `dtype`: lower corner index into the extended grid (int
    bits in column 0), fractions x, y, z, Re value, Im value (conjugated where mirrored),
    `extra`, ±1 (−1 = mirrored). (`_trilinear_cpu` computes the same positions on the CPU.)
    """
    xp = array_namespace(matrices)
    n_pixels = len(geometry._pixels[0])
    records = xp.zeros((matrices.shape[0] * n_pixels, 8), dtype=dtype)
    # positions in the records' precision: float32 q is exact to ~1e-5 voxel for P ≤ 1024
    a = (matrices[:, :2, :] * geometry.scale).astype(dtype)
    step = max(1, _CHUNK // n_pixels)
    starts = range(0, matrices.shape[0], step)
    tasks = [functools.partial(_fill_records, geometry, records, a, i, i + step, values, extra)
             for i in starts]
    _run_parallel(tasks, _threads(xp))
    return records


def _fill_records(geometry, records, a, start, stop, values, extra) -> None:
    xp = array_namespace(records)
    _, kx, ky, _, _ = geometry.pixels(xp)
    kx, ky = kx.astype(records.dtype), ky.astype(records.dtype)
    p2, e, hx = geometry.padded_px // 2, geometry.extended_shape[1], geometry.extended_shape[2]
    r = a[start:stop]
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
    """Σ_c w_c · grid[corner_c] per row, on the GPU: grid_view `(G, k)` real -> `(m, k)` (the
    CPU's gather is `_trilinear_cpu`'s compiled one)."""
    xp = array_namespace(grid_view)
    return xp.einsum("mc,mck->mk", weights.astype(grid_view.dtype), grid_view[corners])


def _scatter_gpu(accumulator: Any, corners: Any, weights: Any, values: Any) -> None:
    """accumulator[corner_c] += w_c · values, in place, on the GPU: accumulator `(G, k)`
    float64 (the CPU's scatter is `_trilinear_cpu`'s compiled one)."""
    import cupyx

    k = values.shape[1]
    for column in range(k):
        contribution = (weights * values[:, column, None]).ravel()
        cupyx.scatter_add(accumulator.reshape(-1), corners.ravel() * k + column, contribution)


def _interpolate(geometry: SliceGeometry, grid_view: Any, matrices: Any) -> Any:
    """Trilinear samples `(b·p, 2)` (Re, Im; conjugated where mirrored) of the extended grid
    (as `(G, 2)` real) at the kept pixels of orientations `(b, 3, 3)`, image-major."""
    xp = array_namespace(grid_view)
    if xp is numpy:
        return _interpolate_compiled(geometry, grid_view, matrices)
    records = _positions(geometry, matrices, grid_view.dtype)
    out = xp.empty((records.shape[0], 2), dtype=grid_view.dtype)
    for s in range(0, records.shape[0], _CHUNK):
        chunk = slice(s, s + _CHUNK)
        out[chunk] = _gather(grid_view, *_stencils(geometry, records[chunk]))
    out[:, 1] *= records[:, 7]
    return out


def _compiled_tables(geometry: SliceGeometry, matrices: Any, dtype: Any) -> tuple[Any, ...]:
    """(A's first two rows scaled by P/N `(b, 2, 3)`, kx, ky, P/2, 1), in the samples'
    precision, for `_trilinear_cpu`."""
    dtype = numpy.dtype(dtype)
    _, kx, ky, _, _ = geometry._pixels
    a = numpy.ascontiguousarray((matrices[:, :2, :] * geometry.scale).astype(dtype))
    p2 = geometry.padded_px // 2
    return a, kx.astype(dtype), ky.astype(dtype), dtype.type(p2), dtype.type(1)


def _interpolate_compiled(geometry: SliceGeometry, grid_view: numpy.ndarray,
                          matrices: Any) -> numpy.ndarray:
    """`_interpolate` on the CPU (`_trilinear_cpu.gather`), images split over threads."""
    from . import _trilinear_cpu

    a, kx, ky, half, one = _compiled_tables(geometry, matrices, grid_view.dtype)
    _, e, hx = geometry.extended_shape
    b = a.shape[0]
    out = numpy.empty((b * kx.shape[0], 2), dtype=grid_view.dtype)
    grid = numpy.ascontiguousarray(grid_view)

    def gather(start: int, stop: int) -> None:
        _trilinear_cpu.gather(a, kx, ky, half, one, geometry.padded_px // 2, grid, e, hx, out,
                              start, stop)

    threads = min(_threads(numpy), b)
    bounds = [b * t // threads for t in range(threads + 1)]
    _run_parallel([functools.partial(gather, lo, hi) for lo, hi in
                   itertools.pairwise(bounds) if hi > lo], threads)
    return out


def _splat(geometry: SliceGeometry, accumulator: Any, matrices: Any, values: Any,
           extra: Any = None) -> None:
    """Adjoint of `_interpolate`: accumulator `(G, 2 | 3)` float64 += the trilinear spread of
    complex `values` (b·p,) (conjugated where mirrored) and of the real `extra` (b·p,)."""
    xp = array_namespace(accumulator)
    if xp is numpy:
        _splat_compiled(geometry, accumulator, matrices, values, extra)
        return
    records = _positions(geometry, matrices, values.real.dtype, values, extra)
    k = accumulator.shape[1]
    for s in range(0, records.shape[0], _CHUNK):  # GPU atomics need no slab order
        chunk = records[s : s + _CHUNK]
        corners, weights = _stencils(geometry, chunk)
        _scatter_gpu(accumulator, corners, weights, chunk[:, 4 : 4 + k].astype(xp.float64))


def _splat_compiled(geometry: SliceGeometry, accumulator: numpy.ndarray, matrices: Any,
                    values: numpy.ndarray, extra: numpy.ndarray | None) -> None:
    """`_splat` on the CPU (`_trilinear_cpu`): slab-sorted, the grid's z ranges on
    `fft_workers()` threads; the same sums for any thread count."""
    from . import _trilinear_cpu

    dtype = values.real.dtype
    a, kx, ky, half, one = _compiled_tables(geometry, matrices, dtype)
    p2 = geometry.padded_px // 2
    depth, e, hx = geometry.extended_shape
    shift = _slab_key_shift(geometry)
    extra_values = numpy.empty(0, dtype) if extra is None else \
        numpy.ascontiguousarray(extra, dtype=dtype)
    values_sorted = numpy.empty((values.shape[0], accumulator.shape[1]), dtype)
    order, first = _trilinear_cpu.sort_samples(
        a, kx, ky, half, one, p2, e, shift, numpy.ascontiguousarray(values.real),
        numpy.ascontiguousarray(values.imag), extra_values, values_sorted)
    ny = (e >> shift) + 1

    def scatter(z_lo: int, z_hi: int) -> None:  # samples with z or z + 1 in [z_lo, z_hi)
        start, stop = int(first[max(z_lo - 1, 0) * ny]), int(first[z_hi * ny])
        _trilinear_cpu.scatter_sorted(order, values_sorted, start, stop, a, kx, ky, half,
                                      one, p2, accumulator, e, hx, z_lo, z_hi)

    ranges = _trilinear_cpu.z_ranges(first, ny, depth, _threads(numpy))
    _run_parallel([functools.partial(scatter, *r) for r in ranges], len(ranges))


def extend_grid(half: Any) -> Any:
    """FFT-layout half transform `(P, P, P//2+1)` -> extended centred grid (module notes)."""
    xp = array_namespace(half)
    p = half.shape[0]
    out = xp.zeros((p + 2, p + 2, p // 2 + 2), dtype=half.dtype)
    out[:p, :p, : p // 2 + 1] = xp.roll(half, (p // 2, p // 2), axis=(0, 1))
    out[p:, :p] = out[:2, :p]
    out[:, p:] = out[:, :2]
    return out


def fold_grid(extended: Any, out: Any = None, *, add: bool = False) -> Any:
    """Adjoint of `extend_grid`: sums the wrapped copies back; `(P, P, P//2+1, ...)`.

    out: an array of that shape to write into (any dtype, e.g. the `.real` view of a complex
    grid; values are cast), or to add into with `add` (summing several accumulators' grids
    without forming their sum). Works block by block: no temporary of the grid's size.
    """
    xp = array_namespace(extended)
    p = extended.shape[0] - 2
    h, hx = p // 2, p // 2 + 1
    if out is None:
        out = xp.empty((p, p, hx, *extended.shape[3:]), dtype=extended.dtype)
        add = False
    # FFT index i holds the centred slot (i + P//2) mod P; slots P and P + 1 are copies of 0, 1
    blocks = ((slice(0, p - h), slice(h, p)), (slice(p - h, p), slice(0, h)))
    for out_z, slot_z in blocks:
        for out_y, slot_y in blocks:
            source = extended[slot_z, slot_y, :hx]
            if add:
                out[out_z, out_y] += source
            else:
                out[out_z, out_y] = source
    wrapped = [(i - h) % p for i in (0, 1)]  # FFT indices of slots 0 and 1
    for k, index in enumerate(wrapped):  # the wrapped planes, put in FFT order along the other
        out[index] += xp.roll(extended[p + k, :p, :hx], -h, axis=0)
        out[:, index] += xp.roll(extended[:p, p + k, :hx], -h, axis=0)
        for j, other in enumerate(wrapped):
            out[index, other] += extended[p + k, p + j, :hx]
    return out


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
    kx, ky = fft_wave_numbers(n, xp, rfft=True), fft_wave_numbers(n, xp)
    phase_x = xp.exp((-2j * numpy.pi / n) * shift[:, 0, None] * kx).astype(dtype)
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
