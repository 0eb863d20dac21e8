"""Fourier projection (central slices) and its exact adjoint, back-projection.

A volume V `(N, N, N)` (centre at N // 2) is divided by the gridding correction (below), zero
padded to P = round(padding · N) (centre at P // 2) and transformed (`rfftn`). The image
frequency k = (kx, ky) (wave numbers per N pixels) samples that transform at
q = (P / N) · Aᵀ (kx, ky, 0) by trilinear interpolation, using V̂(−q) = conj V̂(q) for qx < 0.
Only pixels with |k| ≤ r_max_px (default N // 2, at most (P // 2)·N/P) are used; the others are
zero. Then the CTF multiplies, the RELION origin shifts the image (a particle is its centred
projection translated by −origin) and `irfft2` gives P(x, y) = Σ_z V(Aᵀ (x, y, z)) with the
centre at N // 2 (odd and even N).

Trilinear interpolation in Fourier space multiplies the real-space padded volume by
sinc²(x/P)·sinc²(y/P)·sinc²(z/P) (x from the centre, normalised sinc); the gridding correction
divides V by that before padding.

`backproject` is the exact adjoint of `project` (same trilinear weights, scattered): for any
volume x and images y, ⟨project(x), y⟩ = ⟨x, backproject(y)⟩. The scatter-add uses SciPy's
compressed-sparse kernels on the CPU (samples first ordered by z slab, which keeps the
accumulator cache-friendly) and `cupyx.scatter_add` on the GPU.

Layout of the interpolation grid: the half transform `(P, P, P // 2 + 1)` with z and y
centred (slot = wave number + P // 2) and two wrapped copies appended on z and y, plus one
zero column on x, i.e. `(P + 2, P + 2, P // 2 + 2)`, so that every trilinear corner exists
without wrapping the index; back-projection folds those copies back.
"""

from __future__ import annotations

import dataclasses
import functools
from types import ModuleType
from typing import Any

import numpy

from ._backend import array_namespace
from ._fft import irfft2, irfftn, rfft2, rfftn

# corner offsets (dz, dy, dx) in the order of the trilinear weights below
_CORNERS = [(dz, dy, dx) for dz in (0, 1) for dy in (0, 1) for dx in (0, 1)]


@dataclasses.dataclass(frozen=True)
class SliceGeometry:
    """Kept pixels of an N-box half spectrum and the padded grid they are interpolated in."""

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
        return tuple(xp.asarray(a) for a in self._pixels)


def slice_geometry(box_px: int, padding: float = 2.0, r_max_px: float | None = None):
    """Validated `SliceGeometry` for an N-pixel box, padding factor and maximum radius."""
    box_px = int(box_px)
    if box_px < 2:
        raise ValueError(f"box_px={box_px} must be at least 2 pixels")
    if not 1.0 <= float(padding) <= 4.0:
        raise ValueError(f"padding={padding} must be between 1 and 4 (RELION uses 2)")
    padded = int(round(float(padding) * box_px))
    limit = (padded // 2) * box_px / padded  # keeps every trilinear corner inside the grid
    r_max = box_px // 2 if r_max_px is None else float(r_max_px)
    if not 0 < r_max:
        raise ValueError(f"r_max_px={r_max_px} must be positive (Fourier pixels)")
    return SliceGeometry(box_px, padded, min(float(r_max), limit))


def gridding_correction(box_px: int, padded_px: int, xp: ModuleType = numpy) -> Any:
    """sinc²(x/P)·sinc²(y/P)·sinc²(z/P) on the N³ box, x from the centre N // 2: `(N, N, N)`
    float64. Dividing by it undoes trilinear interpolation on the P-point grid."""
    r = (xp.arange(box_px, dtype=xp.float64) - box_px // 2) / padded_px
    s = xp.sinc(r) ** 2
    return s[:, None, None] * s[None, :, None] * s[None, None, :]


def _trilinear(geometry: SliceGeometry, matrices: Any, order_by_z: bool) -> tuple[Any, ...]:
    """Sparse trilinear stencils of the kept pixels of a batch of orientations.

    Returns (source (m,) index into the flattened (b, p) pixels, flipped (m,) bool, corner
    indices (m, 8) int32 into the extended grid, weights (m, 8) float64).
    """
    xp = array_namespace(matrices)
    _, kx, ky, _, _ = geometry.pixels(xp)
    p2, e, hx = geometry.padded_px // 2, geometry.extended_shape[1], geometry.extended_shape[2]
    a = xp.asarray(matrices, dtype=xp.float64)[:, :2, :] * geometry.scale  # (b, 2, 3)
    q = [xp.reshape(a[:, 0, j, None] * kx + a[:, 1, j, None] * ky, (-1,)) for j in range(3)]
    flipped = q[0] < 0
    sign = xp.where(flipped, -1.0, 1.0)
    lower = []
    fractions = []
    for j in range(3):
        qj = xp.clip(q[j] * sign, -p2, p2)  # |q| ≤ P // 2 up to rounding
        floor = xp.floor(qj)
        lower.append(floor.astype(xp.int32))
        fractions.append(qj - floor)
    source = None
    if order_by_z:  # slab order: a stable counting sort on a 16-bit key is linear time
        source = xp.argsort((lower[2] + p2).astype(xp.int16), kind="stable")
        lower = [v[source] for v in lower]
        fractions = [v[source] for v in fractions]
        flipped = flipped[source]
    base = ((lower[2] + p2) * e + (lower[1] + p2)) * hx + lower[0]
    offsets = xp.asarray([(dz * e + dy) * hx + dx for dz, dy, dx in _CORNERS], dtype=xp.int32)
    corners = base[:, None] + offsets[None, :]
    fz, fy, fx = fractions[2], fractions[1], fractions[0]
    wyx = xp.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx], axis=1)
    weights = xp.concatenate([(1 - fz)[:, None] * wyx, fz[:, None] * wyx], axis=1)
    if source is None:
        source = xp.arange(flipped.shape[0])
    return source, flipped, corners, weights


def _gather(grid_view: Any, corners: Any, weights: Any) -> Any:
    """Σ_c w_c · grid[corner_c] for each row: grid_view `(G, k)` real -> `(m, k)`."""
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


def _scatter(accumulator: Any, corners: Any, weights: Any, values: Any) -> None:
    """accumulator[corner_c] += w_c · values, in place: accumulator `(G, k)` float64."""
    xp = array_namespace(accumulator)
    m, k = values.shape
    if xp is numpy:
        kernel = _csc_matvecs()
        if kernel is not None:
            pointers = numpy.arange(0, 8 * m + 1, 8, dtype=corners.dtype)
            kernel(accumulator.shape[0], m, k, pointers, corners.ravel(), weights.ravel(),
                   numpy.ascontiguousarray(values, dtype=accumulator.dtype).ravel(),
                   accumulator.reshape(-1))
            return
        for column in range(k):
            numpy.add.at(accumulator[:, column], corners.ravel(),
                         (weights * values[:, column, None]).ravel())
        return
    import cupyx

    flat = accumulator.reshape(-1)
    for column in range(k):
        cupyx.scatter_add(flat, corners.ravel() * k + column,
                          (weights * values[:, column, None]).ravel())


@functools.cache
def _csc_matvecs() -> Any:
    # SciPy's compiled Y += Aᵀ X kernel, in place (the public `A.T @ X` allocates Y each call,
    # which costs more than the scatter itself for a large grid); absent -> numpy.add.at.
    try:
        from scipy.sparse import _sparsetools

        return _sparsetools.csc_matvecs
    except (ImportError, AttributeError):
        return None


def extend_grid(half: Any) -> Any:
    """FFT-layout half transform `(P, P, P//2+1)` -> extended centred grid (module notes)."""
    xp = array_namespace(half)
    p = half.shape[0]
    centred = xp.roll(half, (p // 2, p // 2), axis=(0, 1))
    out = xp.zeros((p + 2, p + 2, p // 2 + 2), dtype=half.dtype)
    out[:p, :p, : p // 2 + 1] = centred
    out[p:, :p] = out[:2, :p]
    out[:, p:] = out[:, :2]
    return out


def fold_grid(extended: Any) -> Any:
    """Adjoint of `extend_grid`: sums the wrapped copies back, returns `(P, P, P//2+1, ...)`."""
    xp = array_namespace(extended)
    p = extended.shape[0] - 2
    grid = extended[:, :, : p // 2 + 1].copy()
    grid[:, :2] += grid[:, p:]
    grid = grid[:, :p]
    grid[:2] += grid[p:]
    return xp.roll(grid[:p], (-(p // 2), -(p // 2)), axis=(0, 1))


def _phase_factors(geometry: SliceGeometry, origin_xy_px: Any, b: int, xp: ModuleType) -> Any:
    """exp(−2πi k·(c − origin)/N) at the kept pixels `(b, p)`: centre c = N // 2, then the
    particle is the centred image translated by −origin."""
    n = geometry.box_px
    _, kx, ky, _, _ = geometry.pixels(xp)
    shift = xp.full((b, 2), float(n // 2))
    if origin_xy_px is not None:
        shift = shift - xp.reshape(xp.asarray(origin_xy_px, dtype=xp.float64), (b, 2))
    arg = (-2.0 * numpy.pi / n) * (shift[:, 0, None] * kx + shift[:, 1, None] * ky)
    return xp.exp(1j * arg)


def _at_pixels(geometry: SliceGeometry, array: Any | None, b: int, xp: ModuleType) -> Any:
    """Values of a per-image half-spectrum array `(b | 1, N, N//2+1)` at the kept pixels."""
    if array is None:
        return None
    flat, *_ = geometry.pixels(xp)
    h = geometry.box_px // 2 + 1
    arr = xp.reshape(xp.asarray(array), (-1, geometry.box_px * h))
    if arr.shape[0] not in (1, b):
        raise ValueError(
            f"got {arr.shape[0]} CTF images for {b} projections; pass one per image or one "
            f"shared `(N, N//2+1)` array"
        )
    return xp.broadcast_to(arr[:, flat], (b, flat.shape[0]))


def _check_matrices(matrices: Any) -> Any:
    if matrices.ndim != 3 or matrices.shape[1:] != (3, 3):
        raise ValueError(
            f"rotation matrices must be (n, 3, 3); got {tuple(matrices.shape)} "
            "(use euler_to_matrix(rot, tilt, psi))"
        )
    return matrices


def _default_batch(geometry: SliceGeometry, n: int, batch_size: int | None) -> int:
    if batch_size is not None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1")
        return int(batch_size)
    pixels = len(geometry._pixels[0])
    return max(1, min(n, int(2.5e8 // (pixels * 320))))  # ≈ 320 bytes of temporaries per pixel


def _real_dtypes(xp: ModuleType, dtype: Any) -> tuple[Any, Any]:
    if dtype == xp.float64 or dtype == xp.complex128:
        return xp.float64, xp.complex128
    return xp.float32, xp.complex64


@dataclasses.dataclass(frozen=True)
class Projector:
    """A volume prepared for projection: its padded, gridding-corrected half transform.

    Build with `Projector.from_volume`; `project` then makes any number of projections.
    """

    geometry: SliceGeometry
    grid: Any  # extended grid (module notes), complex

    @classmethod
    def from_volume(
        cls, volume: Any, *, padding: float = 2.0, r_max_px: float | None = None
    ) -> Projector:
        """volume: `(N, N, N)` float32 (float64 stays float64), centre at N // 2."""
        xp = array_namespace(volume)
        if volume.ndim != 3 or len(set(volume.shape)) != 1:
            raise ValueError(f"volume must be a cubic (N, N, N) array; got {volume.shape}")
        real, _ = _real_dtypes(xp, volume.dtype)
        geometry = slice_geometry(volume.shape[0], padding, r_max_px)
        n, p = geometry.box_px, geometry.padded_px
        corrected = volume / gridding_correction(n, p, xp)
        padded = xp.zeros((p, p, p), dtype=real)
        start = p // 2 - n // 2
        padded[start : start + n, start : start + n, start : start + n] = corrected
        half = rfftn(xp.roll(padded, (-(p // 2),) * 3, axis=(0, 1, 2)), ndim=3)
        return cls(geometry, extend_grid(half))

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

        origin_xy_px: `(n, 2)` RELION origins in pixels (rlnOriginX/YAngst / pixel size); the
        image is the centred projection translated by −origin. ctf: `(n, N, N//2+1)` or
        `(N, N//2+1)` CTF on the rfft2 grid (`ctf_2d`), multiplied in. spectra=True returns
        the half spectra `(n, N, N//2+1)` complex, i.e. rfft2 of the images.
        """
        xp = array_namespace(self.grid)
        matrices = _check_matrices(xp.asarray(matrices, dtype=xp.float64))
        geometry, n_img = self.geometry, matrices.shape[0]
        n, h = geometry.box_px, geometry.box_px // 2 + 1
        flat, *_ = geometry.pixels(xp)
        view = self.grid.view(_real_dtypes(xp, self.grid.dtype)[0]).reshape(-1, 2)
        out = xp.zeros((n_img, n * h), dtype=self.grid.dtype)
        step = _default_batch(geometry, n_img, batch_size)
        for start in range(0, n_img, step):
            stop = min(n_img, start + step)
            b = stop - start
            _, flipped, corners, weights = _trilinear(geometry, matrices[start:stop], False)
            pair = _gather(view, corners, weights)
            values = (pair[:, 0] + 1j * pair[:, 1]).astype(self.grid.dtype)
            values = xp.where(flipped, xp.conj(values), values).reshape(b, -1)
            origins = None if origin_xy_px is None else origin_xy_px[start:stop]
            values = values * _phase_factors(geometry, origins, b, xp)
            if ctf is not None:
                ctf_b = ctf if xp.asarray(ctf).ndim == 2 else ctf[start:stop]
                values = values * _at_pixels(geometry, ctf_b, b, xp)
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
    """Project a volume `(N, N, N)` at orientations `(n, 3, 3)`: `(n, N, N)` images.

    One-call form of `Projector.from_volume(volume, padding=…).project(matrices, …)`; see
    there and the module notes for conventions.
    """
    projector = Projector.from_volume(volume, padding=padding, r_max_px=r_max_px)
    return projector.project(matrices, origin_xy_px=origin_xy_px, ctf=ctf, spectra=spectra,
                             batch_size=batch_size)


def _column_multiplicity(size: int, xp: ModuleType) -> Any:
    """How often each rfft column stands for itself and its mirror: 1 at 0 (and N/2), else 2."""
    c = xp.full(size // 2 + 1, 2.0)
    c[0] = 1.0
    if size % 2 == 0:
        c[-1] = 1.0
    return c


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

    ⟨project(x, A, …), y⟩ = ⟨x, backproject(y, A, …)⟩ for real x, y. Accumulates in float64;
    returns the images' float dtype. For reconstruction use `ReconstructionAccumulator`.
    """
    xp = array_namespace(images)
    real, _ = _real_dtypes(xp, images.dtype)
    matrices = _check_matrices(xp.asarray(matrices, dtype=xp.float64))
    geometry = slice_geometry(images.shape[-1], padding, r_max_px)
    n, p = geometry.box_px, geometry.padded_px
    spectra = rfft2(xp.asarray(images, dtype=real)) * (_column_multiplicity(n, xp) / n**2)
    accumulator = xp.zeros((int(numpy.prod(geometry.extended_shape)), 2), dtype=xp.float64)
    step = _default_batch(geometry, matrices.shape[0], batch_size)
    for start in range(0, matrices.shape[0], step):
        stop = min(matrices.shape[0], start + step)
        b = stop - start
        values = _at_pixels(geometry, spectra[start:stop], b, xp)
        origins = None if origin_xy_px is None else origin_xy_px[start:stop]
        values = values * xp.conj(_phase_factors(geometry, origins, b, xp))
        if ctf is not None:
            ctf_b = ctf if xp.asarray(ctf).ndim == 2 else ctf[start:stop]
            values = values * _at_pixels(geometry, ctf_b, b, xp)
        source, flipped, corners, weights = _trilinear(geometry, matrices[start:stop], True)
        values = xp.reshape(values, (-1,))[source]
        values = xp.where(flipped, xp.conj(values), values)
        _scatter(accumulator, corners, weights, xp.stack([values.real, values.imag], axis=1))
    folded = fold_grid(accumulator.reshape(*geometry.extended_shape, 2))
    half = (folded[..., 0] + 1j * folded[..., 1]) / _column_multiplicity(p, xp)
    volume = xp.roll(irfftn(half, (p, p, p)) * float(p) ** 3, (p // 2,) * 3, axis=(0, 1, 2))
    start = p // 2 - n // 2
    volume = volume[start : start + n, start : start + n, start : start + n]
    return (volume / gridding_correction(n, p, xp)).astype(real)
