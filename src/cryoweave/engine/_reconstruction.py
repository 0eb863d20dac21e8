"""Direct Fourier reconstruction from images at known orientations.

`ReconstructionAccumulator.insert` back-projects Σ w·CTF·F̂ (data) and Σ w·CTF² (weights) onto
the padded grid with the trilinear weights of `project` (each image once per symmetry operator
R, at A·Rᵀ; each Friedel pair of image pixels once). `reconstruct` turns the sums into a map as
`relion_reconstruct` does by default (`_gridding`): x = 0 plane Friedel mates summed, iterative
gridding weights w with (weight·w) ∗ blob ≈ 1 (10 iterations; `gridding_iterations=0` divides by
the weight instead), inverse FFT, crop, division by the trilinear sinc² and the corners beyond
radius N/2 set to their mean. Grid layout and backend rules: `_slicing`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

import numpy

from cryoweave.physical import MAX_GRIDDING_ITERATIONS

from . import _gridding
from ._backend import array_namespace, fft_workers, free_device_memory_bytes
from ._fft import irfftn, rfft2
from ._slicing import (
    SliceGeometry,
    _at_pixels,
    _batch_ctf,
    _batch_size,
    _check_ctf,
    _check_matrices,
    _phase_factors,
    _real_dtype,
    _splat,
    fold_grid,
    slice_geometry,
    trilinear_gridding_correction,
)

GRIDDING_ITERATIONS = 10  # relion_reconstruct --iter default
REGULARIZATION = 1e-3  # Wiener constant relative to the mean weight


@dataclasses.dataclass
class ReconstructionAccumulator:
    """Sums Σ w·CTF·F̂ (data) and Σ w·CTF² (weights) of inserted images on the padded grid.

    One per half set (`half` 1 or 2): `empty`, `insert` batches, add accumulators (`a + b`:
    batches, workers, or both halves, which gives `half=None`), then `reconstruct()`. `sums` is
    the extended grid (`_slicing` notes) as `(G, 3)` float64 columns (Re data, Im data, weight);
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
        """(CTF·F̂ centred and shifted by +origin (b·p,) complex, CTF² (b·p,) real), each
        Friedel pair of pixels counted once."""
        xp, geometry, b = array_namespace(self.sums), self.geometry, stop - start
        spectra = rfft2(images[start:stop])
        real = _real_dtype(xp, spectra.dtype)
        origins = None if origin_xy_px is None else origin_xy_px[start:stop]
        values = _at_pixels(geometry, spectra, b, xp)
        values = values * xp.conj(_phase_factors(geometry, origins, b, xp, spectra.dtype))
        pairs = _pair_multiplicity(geometry, xp).astype(real)
        if ctf is None:
            values *= pairs
            weight = xp.broadcast_to(pairs, values.shape)
        else:
            ctf_b = _at_pixels(geometry, _batch_ctf(ctf, start, stop), b, xp).astype(real)
            scaled = ctf_b * pairs
            values *= scaled
            weight = scaled * ctf_b
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

    def reconstruct(self, *, gridding_iterations: int = GRIDDING_ITERATIONS,
                    regularization: float = REGULARIZATION, mask_corners: bool = True,
                    gridding_correction: bool = True, fft_workers: int | None = None) -> Any:
        """The map `(N, N, N)` float32 (centre N // 2) from the sums.

        Friedel mates on the x = 0 plane are summed; λ = regularization × (mean weight over
        sampled voxels) is added to the weight of sampled voxels. gridding_iterations > 0
        (default 10, as relion_reconstruct): F̂ = data·w with the iterative gridding weights
        of `_gridding.gridding_weights`, inside |q| < r_max (padded voxels); 0: the simple
        division F̂ = data / (weight + λ) (unsampled voxels 0). Then the inverse FFT, the crop
        to N³, the division by the trilinear sinc² (`gridding_correction`) and, with
        `mask_corners`, everything beyond radius N/2 set to its mean through a 3-pixel
        raised-cosine edge (relion_reconstruct does both). fft_workers: threads of each SciPy
        FFT (None: `fft_workers()`); give 1 when several maps are reconstructed side by side in
        threads (`reconstruct_maps`).
        """
        return _solve([self], gridding_iterations=gridding_iterations,
                      regularization=regularization, mask_corners=mask_corners,
                      gridding_correction=gridding_correction, fft_workers=fft_workers)


Summed = Sequence[ReconstructionAccumulator]


def _solve(parts: Summed, *, gridding_iterations: int = GRIDDING_ITERATIONS,
           regularization: float = REGULARIZATION, mask_corners: bool = True,
           gridding_correction: bool = True, fft_workers: int | None = None) -> Any:
    """`reconstruct` of the accumulator whose sums are those of `parts` added (one part: itself).

    Lean on memory: each part's sums are folded straight into a complex64 data grid and a
    float32 weight grid (no float64 copy of the grid, no summed accumulator); the map is float32
    and the gridding runs in float32, so nothing needs more.
    """
    if not regularization >= 0:
        raise ValueError(f"regularization={regularization} must be ≥ 0 (e.g. 1e-3)")
    if int(gridding_iterations) != gridding_iterations or \
            not 0 <= gridding_iterations <= MAX_GRIDDING_ITERATIONS:
        raise ValueError(f"gridding_iterations={gridding_iterations} must be an integer from 0 "
                         f"to {MAX_GRIDDING_ITERATIONS} (10 as relion_reconstruct; 0 divides "
                         "by the weights)")
    if not parts:
        raise ValueError("no accumulator to reconstruct from")
    geometry = parts[0].geometry
    if any(part.geometry != geometry for part in parts):
        raise ValueError("cannot sum accumulators of different grids; use the same box_px, "
                         "padding and r_max_px")
    xp = array_namespace(*(part.sums for part in parts))
    n, p = geometry.box_px, geometry.padded_px
    data = xp.empty((p, p, p // 2 + 1), dtype=xp.complex64)
    weight = xp.empty(data.shape, dtype=xp.float32)
    for k, part in enumerate(parts):
        sums = part.sums.reshape(*geometry.extended_shape, 3)
        for column, out in enumerate((data.real, data.imag, weight)):
            fold_grid(sums[..., column], out, add=k > 0)
    _gridding.add_friedel_mates(data, weight)
    sampled = weight > 0
    if not bool(xp.any(sampled)):
        raise ValueError("the accumulator is empty; insert images before reconstructing")
    mean_weight = float(xp.mean(weight[sampled], dtype=xp.float64))
    weight *= xp.float32(1.0 / mean_weight)  # the gridding floor (1e-6) is relative to mean 1
    weight[sampled] += xp.float32(regularization)  # (CuPy ufuncs take no where=)
    if gridding_iterations:
        inside = _gridding.inside_radius(p, geometry.r_max_px * geometry.scale, xp)
        data *= _gridding.gridding_weights(weight, inside, int(gridding_iterations),
                                           fft_workers=fft_workers)
        data *= xp.float32(1.0 / mean_weight)
    else:
        weight[~sampled] = xp.inf  # unsampled voxels stay 0
        weight *= xp.float32(mean_weight)
        data /= weight
    del weight, sampled
    padded = irfftn(data, (p, p, p), workers=fft_workers)
    del data
    window = (xp.arange(n) - n // 2) % p  # centre N // 2 <- padded index 0
    volume = padded[window][:, window][:, :, window].astype(xp.float64)
    del padded
    if gridding_correction:
        volume = volume / trilinear_gridding_correction(n, p, xp)
    if mask_corners:
        volume = _gridding.mask_corners(volume)
    return volume.astype(xp.float32)


def reconstruct_maps(accumulators: Sequence[ReconstructionAccumulator | Summed], *,
                     threads: int = 1, **options: Any) -> list[Any]:
    """`acc.reconstruct(**options)` of each accumulator (e.g. half 1, half 2 and both), several
    side by side when `threads` > 1 (NumPy: SciPy FFTs and array arithmetic release the GIL).

    An item may be a sequence of accumulators: the map of their summed sums (`(acc1, acc2)`
    gives the map of both halves without forming `acc1 + acc2`). All maps at once when their
    working arrays fit in half the free memory (three maps on two cores: no core idles while
    a last map runs alone), else rounds of `threads`; the FFTs of a round of k maps get
    `fft_workers() // k` threads each (at least 1). The maps are the same as one after the
    other. CuPy sums are reconstructed one after the other.
    """
    items = [[a] if isinstance(a, ReconstructionAccumulator) else list(a) for a in accumulators]
    threads = max(1, min(int(threads), len(items)))
    if threads == 1 or any(array_namespace(a.sums) is not numpy for it in items for a in it):
        return [_solve(parts, **options) for parts in items]
    workers = options.pop("fft_workers", None) or fft_workers()
    at_once = _maps_at_once(items, threads)
    maps: list[Any] = []
    with ThreadPoolExecutor(at_once, thread_name_prefix="reconstruct") as pool:
        for start in range(0, len(items), at_once):
            batch = items[start:start + at_once]
            share = max(1, workers // len(batch))
            maps += pool.map(lambda parts, share=share: _solve(parts, **options,
                                                               fft_workers=share), batch)
    return maps


def reconstruct_working_bytes(padded_px: int) -> int:
    """Peak working memory of one `reconstruct` on the CPU (gridding loop and final transform):
    about 9 float32 half grids `(P, P, P//2+1)` (data, weight, gridding factor and product,
    the FFTs' outputs and temporaries; the final transform's P³ output and temporary)."""
    return 9 * padded_px * padded_px * (padded_px // 2 + 1) * 4


def _maps_at_once(items: list[list[ReconstructionAccumulator]], threads: int) -> int:
    if len(items) <= threads:
        return len(items)
    per_map = reconstruct_working_bytes(items[0][0].geometry.padded_px)
    fits = free_device_memory_bytes("cpu") // 2 // per_map
    return max(threads, min(len(items), int(fits)))


@functools.lru_cache(maxsize=16)
def _pair_multiplicity(geometry: SliceGeometry, xp: ModuleType) -> Any:
    """Per kept pixel `(p,)` float64: 1/2 on the kx = 0 column except its self-paired pixels
    (ky = 0, ky = N/2), 1 elsewhere. (0, ky) and (0, −ky) of a real image are one Friedel pair,
    which lands on the same grid sample; other pairs are stored once in the half spectrum."""
    _, kx, ky, _, _ = geometry._pixels
    paired = (kx == 0) & (ky != 0) & (2 * numpy.abs(ky) != geometry.box_px)
    return xp.asarray(numpy.where(paired, 0.5, 1.0))


def reconstruct(
    images: Any,
    matrices: Any,
    *,
    ctf: Any | None = None,
    origin_xy_px: Any | None = None,
    symmetry: str = "c1",
    padding: float = 2.0,
    regularization: float = REGULARIZATION,
    gridding_iterations: int = GRIDDING_ITERATIONS,
    mask_corners: bool = True,
    batch_size: int | None = None,
) -> Any:
    """Reconstruct a map `(N, N, N)` float32 from images `(n, N, N)` at known orientations.

    `ReconstructionAccumulator.empty(…).insert(…)` then `.reconstruct(…)` in one call.
    """
    xp = array_namespace(images)
    accumulator = ReconstructionAccumulator.empty(images.shape[-1], padding=padding, xp=xp)
    accumulator.insert(images, matrices, ctf=ctf, origin_xy_px=origin_xy_px,
                       symmetry=symmetry, batch_size=batch_size)
    return accumulator.reconstruct(regularization=regularization,
                                   gridding_iterations=gridding_iterations,
                                   mask_corners=mask_corners)
