"""Projection, exact adjoint back-projection, reconstruction and the atoms phantom."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryoweave.engine import irfft2, rfft2, to_host
from cryoweave.engine._ctf import ctf_2d
from cryoweave.engine._fsc import fsc
from cryoweave.engine._geometry import euler_to_matrix, shift_images
from cryoweave.engine._phantom import atom_positions, atoms_phantom
from cryoweave.engine._projection import Projector, backproject, project
from cryoweave.engine._reconstruction import ReconstructionAccumulator, reconstruct
from cryoweave.engine._slicing import slice_geometry, trilinear_gridding_correction
from cryoweave.engine._symmetry import symmetry_matrices

OPTICS = {"voltage_kv": 300.0, "cs_mm": 2.7, "amplitude_contrast": 0.1}


def _random_poses(n, seed):
    rng = np.random.default_rng(seed)
    tilt = np.degrees(np.arccos(rng.uniform(-1, 1, n)))  # uniform on the sphere
    return euler_to_matrix(rng.uniform(-180, 180, n), tilt, rng.uniform(-180, 180, n))


def _random_ctf(n, box, pixel, seed, dtype=np.float32):
    rng = np.random.default_rng(seed)
    du = rng.uniform(8000, 25000, n)
    return ctf_2d(du, du - rng.uniform(0, 1500, n), rng.uniform(0, 180, n), pixel_size_a=pixel,
                  box_px=box, dtype=dtype, **OPTICS)


def _analytic_projections(box, positions, amplitudes, sigma_px, matrices, origins):
    """Exact line integrals of Gaussian atoms: atom p lands at (A p)_xy − origin."""
    grid = np.arange(box) - box // 2
    out = []
    for a, origin in zip(matrices, origins, strict=True):
        p = positions @ a.T
        gx = np.exp(-((grid[None] - p[:, 0, None] + origin[0]) ** 2) / (2 * sigma_px**2))
        gy = np.exp(-((grid[None] - p[:, 1, None] + origin[1]) ** 2) / (2 * sigma_px**2))
        out.append((gy * amplitudes[:, None]).T @ gx / (2 * np.pi * sigma_px**2))
    return np.array(out)


# ---------------------------------------------------------------- adjointness


@pytest.mark.parametrize("box", [8, 9, 12])
@pytest.mark.parametrize("padding", [1.0, 2.0])
def test_backproject_is_the_exact_adjoint(box, padding):
    rng = np.random.default_rng(box)
    n = 6
    x = rng.standard_normal((box, box, box))
    y = rng.standard_normal((n, box, box))
    a = _random_poses(n, box + 1)
    origins = rng.normal(0, 2, (n, 2))
    ctf = _random_ctf(n, box, 2.0, box, dtype=np.float64)
    kwargs = {"padding": padding, "origin_xy_px": origins, "ctf": ctf}
    lhs = np.vdot(project(x, a, **kwargs), y)
    rhs = np.vdot(x, backproject(y, a, **kwargs))
    assert lhs == pytest.approx(rhs, rel=1e-12)


@settings(max_examples=25, deadline=None)
@given(st.integers(4, 11), st.integers(0, 2**31 - 1))
def test_adjoint_property(box, seed):
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((box, box, box)), rng.standard_normal((3, box, box))
    a = _random_poses(3, seed)
    lhs = np.vdot(project(x, a), y)
    rhs = np.vdot(x, backproject(y, a))
    assert lhs == pytest.approx(rhs, rel=1e-10, abs=1e-10)


# ---------------------------------------------------------------- projection conventions


@pytest.mark.parametrize("box", [10, 11])
def test_grid_aligned_views_are_exact_line_sums(box):
    """At padding 2, A = I and A = Ry(90) sample grid points: the slice is the exact DFT of the
    sum along z (resp. x), so P(x, y) = Σ_z V(Aᵀ(x, y, z)) pins axes, centre and scale."""
    rng = np.random.default_rng(3)
    volume = rng.standard_normal((box, box, box))  # (z, y, x)
    undo_gridding = volume * trilinear_gridding_correction(box, 2 * box)
    geometry = slice_geometry(box, 2.0)
    flat = geometry._pixels[0]
    c = box // 2
    # A = I: image[y, x] = Σ_z V[z, y, x].  A = Ry(90) (tilt 90): Aᵀ(x, y, z) = (z, y, −x), so
    # image[y, x] = Σ_x' V[z = c − (x − c), y, x'].
    expected = [volume.sum(axis=0), np.roll(volume.sum(axis=2)[::-1], 2 * c - box + 1, axis=0).T]
    for angles, image in zip([(0, 0, 0), (0, 90, 0)], expected, strict=True):
        spectrum = project(undo_gridding, euler_to_matrix(*angles)[None], spectra=True)[0]
        reference = rfft2(np.asarray(image))
        np.testing.assert_allclose(spectrum.ravel()[flat], reference.ravel()[flat], atol=1e-9)


@pytest.mark.parametrize(("box", "padding", "tolerance"), [(48, 2.0, 0.035), (49, 2.0, 0.035),
                                                           (48, 3.0, 0.016)])
def test_projection_matches_analytic_line_integrals(box, padding, tolerance):
    # trilinear interpolation error at padding 2 is ~3% here (RELION's projector does the same)
    positions, amplitudes = atom_positions(150, 0.3 * box, seed=4)
    volume = atoms_phantom(box, 1.0, n_atoms=150, seed=4, dtype=np.float64)
    a = _random_poses(8, 5)
    origins = np.random.default_rng(6).uniform(-3, 3, (8, 2))
    ours = project(volume, a, padding=padding, origin_xy_px=origins)
    truth = _analytic_projections(box, positions, amplitudes, 1.5, a, origins)
    error = np.linalg.norm(ours - truth, axis=(1, 2)) / np.linalg.norm(truth, axis=(1, 2))
    assert error.max() < tolerance


def test_origin_ctf_and_batches_are_consistent(xp):
    box = 24
    volume = xp.asarray(atoms_phantom(box, 1.0, n_atoms=60, seed=7))
    a = xp.asarray(_random_poses(5, 8))
    origins = np.random.default_rng(9).uniform(-4, 4, (5, 2))
    ctf = xp.asarray(_random_ctf(5, box, 1.5, 10))
    projector = Projector.from_volume(volume)
    plain = projector.project(a)
    assert plain.dtype == xp.float32 and plain.shape == (5, box, box)
    shifted = projector.project(a, origin_xy_px=xp.asarray(origins))
    expected = shift_images(plain, xp.asarray(-origins[:, 0]), xp.asarray(-origins[:, 1]))
    np.testing.assert_allclose(to_host(shifted), to_host(expected), atol=2e-5)
    with_ctf = projector.project(a, ctf=ctf)
    expected = irfft2(rfft2(plain) * ctf, (box, box))
    np.testing.assert_allclose(to_host(with_ctf), to_host(expected), atol=2e-5)
    np.testing.assert_allclose(to_host(projector.project(a, batch_size=2)), to_host(plain),
                               atol=1e-6)


@pytest.mark.parametrize("box", [24, 25])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sample_is_the_spectrum_at_the_asked_pixels(xp, box, dtype):
    """`Projector.sample` gives exactly `project(spectra=True)`'s values at any pixels, in the
    order asked, on white noise; without origins, `project` equals zero origins bit for bit."""
    rng = np.random.default_rng(box)
    volume = xp.asarray(rng.normal(size=(box,) * 3).astype(dtype))
    projector = Projector.from_volume(volume, r_max_px=box / 2 - 2)
    a = xp.asarray(_random_poses(7, box + 1))
    spectra = to_host(projector.project(a, spectra=True)).reshape(7, -1)
    flat, *_ = projector.geometry.pixels(np)
    some = rng.permutation(flat)[: len(flat) // 3]
    values = to_host(projector.sample(a, some))
    assert values.dtype == spectra.dtype and values.shape == (7, len(some))
    np.testing.assert_array_equal(values, spectra[:, some])
    assert projector.sample(a[:0], some).shape == (0, len(some))  # no orientation, no samples
    zero = xp.zeros((7, 2))
    np.testing.assert_array_equal(to_host(projector.project(a)),
                                  to_host(projector.project(a, origin_xy_px=zero)))


def test_sample_refuses_pixels_outside_the_projector():
    projector = Projector.from_volume(atoms_phantom(16, 1.0, n_atoms=20, seed=1), r_max_px=4)
    a = _random_poses(2, 3)
    beyond = 6  # row 0 (ky = 0) of the (16, 9) half spectrum, column 6: kx = 6 > 4
    with pytest.raises(ValueError, match="outside the projector's radius"):
        projector.sample(a, [1, beyond])
    with pytest.raises(ValueError, match="outside the projector's radius"):
        projector.sample(a, [16 * 9])  # past the half spectrum


# ---------------------------------------------------------------- reconstruction


def _simulate(box, n, seed, symmetry=None):
    pixel = 2.0
    truth = atoms_phantom(box, pixel, n_atoms=80, seed=seed, symmetry=symmetry)
    a = _random_poses(n, seed + 1)
    origins = np.random.default_rng(seed + 2).uniform(-2, 2, (n, 2))
    ctf = _random_ctf(n, box, pixel, seed + 3)
    images = project(truth, a, origin_xy_px=origins, ctf=ctf)
    return truth, images, a, origins, ctf


@pytest.mark.parametrize("box", [32, 33])
def test_reconstruction_from_known_poses_with_ctf(box):
    truth, images, a, origins, ctf = _simulate(box, 600, seed=11)
    volume = reconstruct(images, a, ctf=ctf, origin_xy_px=origins)
    assert volume.shape == (box, box, box) and volume.dtype == np.float32
    curve = fsc(volume, truth)
    assert curve.values[1 : box // 4 + 1].min() >= 0.9  # issue criterion up to half Nyquist
    assert curve.values[1 : box // 4 + 1].min() >= 0.99  # what it actually achieves


def test_d7_reconstruction_with_symmetry_imposed():
    box = 32
    truth, images, a, origins, ctf = _simulate(box, 40, seed=21, symmetry="d7")
    with_symmetry = reconstruct(images, a, ctf=ctf, origin_xy_px=origins, symmetry="d7")
    without = reconstruct(images, a, ctf=ctf, origin_xy_px=origins)
    good = fsc(with_symmetry, truth).values[1 : box // 4 + 1]
    assert good.min() >= 0.98  # 40 views × 14 operators fill Fourier space
    # 40 views alone leave gaps: the worst shell is ~0.93 without the operators
    assert good.min() > fsc(without, truth).values[1 : box // 4 + 1].min() + 0.03


def test_symmetry_operators_multiply_on_the_left_of_a_transpose():
    rng = np.random.default_rng(5)
    images = rng.standard_normal((3, 12, 12)).astype(np.float32)
    a = _random_poses(3, 6)
    once = ReconstructionAccumulator.empty(12)
    once.insert(images, a, symmetry="c3")
    explicit = ReconstructionAccumulator.empty(12)
    for r in symmetry_matrices("c3"):
        explicit.insert(images, a @ r.T)  # the orientation equivalent under R: A·Rᵀ
    np.testing.assert_allclose(once.sums, explicit.sums, rtol=1e-12, atol=1e-12)


def test_accumulators_add_across_batches_and_halves(xp):
    box = 16
    _, images, a, origins, ctf = _simulate(box, 40, seed=31)
    images, a, ctf = xp.asarray(images), xp.asarray(a), xp.asarray(ctf)
    halves = [ReconstructionAccumulator.empty(box, half=h, xp=xp) for h in (1, 2)]
    for half, part in zip(halves, (slice(0, 20), slice(20, 40)), strict=True):
        half.insert(images[part], a[part], ctf=ctf[part], origin_xy_px=origins[part],
                    batch_size=7)
    both = halves[0] + halves[1]
    assert both.half is None and both.n_images == 40 and halves[0].half == 1
    whole = ReconstructionAccumulator.empty(box, xp=xp)
    whole.insert(images, a, ctf=ctf, origin_xy_px=origins)
    np.testing.assert_allclose(to_host(both.sums), to_host(whole.sums), atol=1e-9)
    with pytest.raises(ValueError, match="different grids"):
        _ = both + ReconstructionAccumulator.empty(box, padding=3, xp=xp)


def test_input_errors():
    acc = ReconstructionAccumulator.empty(8)
    with pytest.raises(ValueError, match="accumulator is empty"):
        acc.reconstruct()
    with pytest.raises(ValueError, match=r"must be \(n, 8, 8\)"):
        acc.insert(np.zeros((2, 9, 9), np.float32), np.broadcast_to(np.eye(3), (2, 3, 3)))
    with pytest.raises(ValueError, match=r"\(n, 3, 3\)"):
        project(np.zeros((8, 8, 8)), np.eye(3))
    with pytest.raises(ValueError, match="padding"):
        project(np.zeros((8, 8, 8)), np.eye(3)[None], padding=8)
    with pytest.raises(ValueError, match="half"):
        ReconstructionAccumulator.empty(8, half=3)


@pytest.mark.slow
def test_validation_box_64_analytic_projections():
    """Independent truth (analytic line integrals), CTF, 3000 views: FSC ≥ 0.99 to 0.8 Nyquist."""
    box, pixel, sigma_a = 64, 2.0, 2.4
    positions, amplitudes = atom_positions(300, 0.3 * box, seed=41)
    truth = atoms_phantom(box, pixel, n_atoms=300, atom_sigma_a=sigma_a, seed=41)
    a = _random_poses(3000, 42)
    origins = np.random.default_rng(43).uniform(-3, 3, (3000, 2))
    ctf = _random_ctf(3000, box, pixel, 44, dtype=np.float64)
    images = _analytic_projections(box, positions, amplitudes, sigma_a / pixel, a, origins)
    images = irfft2(rfft2(images) * ctf, (box, box)).astype(np.float32)
    volume = reconstruct(images, a, ctf=ctf, origin_xy_px=origins)
    assert fsc(volume, truth).values[1 : int(0.8 * box / 2) + 1].min() >= 0.99


# ---------------------------------------------------------------- phantom


def test_phantom_is_deterministic_and_normalised():
    one = atoms_phantom(24, 1.5, n_atoms=30, seed=3)
    np.testing.assert_array_equal(one, atoms_phantom(24, 1.5, n_atoms=30, seed=3))
    assert not np.array_equal(one, atoms_phantom(24, 1.5, n_atoms=30, seed=4))
    _, amplitudes = atom_positions(30, 0.3 * 24, seed=3)
    assert one.sum() == pytest.approx(amplitudes.sum(), rel=1e-3)  # atoms well inside the box


def test_symmetrised_phantom_is_invariant():
    box = 25  # odd: a 90° array rotation about the centre voxel is exact
    volume = atoms_phantom(box, 1.0, n_atoms=20, seed=5, symmetry="c4")
    np.testing.assert_allclose(np.rot90(volume, 1, axes=(1, 2)), volume, atol=1e-6)
    positions, _ = atom_positions(20, 7.0, seed=5, symmetry="d7")
    assert positions.shape == (20 * 14, 3)
