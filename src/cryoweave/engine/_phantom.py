"""Synthetic test maps: an asymmetric "atoms" phantom, optionally symmetrised.

The phantom is a sum of isotropic 3-D Gaussians ("atoms") at positions drawn uniformly inside
a sphere around the box centre (index N // 2), with random amplitudes, from a seeded NumPy
generator: the same arguments give the same map on every machine. With a symmetry group every
atom position p is replaced by the positions R·p for all operators R, so V(R·r) = V(r).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy

from ._symmetry import symmetry_matrices


def atom_positions(
    n_atoms: int, radius_a: float, *, seed: int = 0, symmetry: str | None = None
) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Atom centres `(m, 3)` (x, y, z in Å from the centre) and amplitudes `(m,)` float64.

    m = n_atoms, or n_atoms·|G| when symmetrised (each atom keeps its amplitude).
    """
    if n_atoms < 1 or not radius_a > 0:
        raise ValueError(
            f"n_atoms={n_atoms} and radius_a={radius_a} must be positive (count, Å)"
        )
    rng = numpy.random.default_rng(seed)
    directions = rng.standard_normal((n_atoms, 3))
    directions /= numpy.linalg.norm(directions, axis=1, keepdims=True)
    radii = radius_a * rng.random(n_atoms) ** (1.0 / 3.0)  # uniform in the ball
    positions = directions * radii[:, None]
    amplitudes = rng.uniform(0.5, 1.5, n_atoms)
    if symmetry is not None:
        operators = symmetry_matrices(symmetry)
        positions = numpy.einsum("kij,aj->kai", operators, positions).reshape(-1, 3)
        amplitudes = numpy.tile(amplitudes, operators.shape[0])
    return positions, amplitudes


def atoms_phantom(
    box_px: int,
    pixel_size_a: float,
    *,
    n_atoms: int = 200,
    atom_sigma_a: float | None = None,
    radius_a: float | None = None,
    seed: int = 0,
    symmetry: str | None = None,
    dtype: Any = numpy.float32,
    xp: ModuleType = numpy,
) -> Any:
    """A phantom map `(N, N, N)` (z, y, x) of Gaussian atoms; deterministic per `seed`.

    atom_sigma_a: Gaussian standard deviation in Å (default 1.5 pixels). radius_a: radius of the
    ball holding the atom centres (default 0.3·N pixels). symmetry: a group name ('d7', 'i2',
    ...) to symmetrise about the centre, or None. Each atom integrates to its amplitude
    (0.5–1.5) in pixel units.
    """
    box_px = int(box_px)
    if box_px < 2 or not pixel_size_a > 0:
        raise ValueError(
            f"box_px={box_px} must be ≥ 2 and pixel_size_a={pixel_size_a} positive (Å)"
        )
    sigma_px = 1.5 if atom_sigma_a is None else float(atom_sigma_a) / pixel_size_a
    radius_px = 0.3 * box_px if radius_a is None else float(radius_a) / pixel_size_a
    if not sigma_px > 0:
        raise ValueError(f"atom_sigma_a={atom_sigma_a} must be positive (Å)")
    positions, amplitudes = atom_positions(n_atoms, radius_px, seed=seed, symmetry=symmetry)
    grid = numpy.arange(box_px, dtype=numpy.float64) - box_px // 2
    norm = (2.0 * numpy.pi * sigma_px**2) ** -0.5
    # separable Gaussians: V[z, y, x] = Σ_a amp_a gz[a, z] gy[a, y] gx[a, x]
    g = [norm * numpy.exp(-((grid[None, :] - positions[:, j, None]) ** 2) / (2 * sigma_px**2))
         for j in range(3)]
    volume = numpy.zeros((box_px, box_px * box_px))
    for start in range(0, positions.shape[0], 512):
        stop = start + 512
        yx = (g[1][start:stop, :, None] * g[0][start:stop, None, :]).reshape(-1, box_px**2)
        volume += (g[2][start:stop] * amplitudes[start:stop, None]).T @ yx
    return xp.asarray(volume.reshape(box_px, box_px, box_px).astype(dtype))
