"""Reconstruction from accumulated sums: gridding weights, Friedel mates, the corner mask and
the accuracy they buy over plain division (`_reconstruction`, `_gridding`)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, special

from cryoweave.engine import ReconstructionAccumulator, reconstruct, to_host
from cryoweave.engine import _gridding as gridding
from cryoweave.engine._ctf import ctf_2d
from cryoweave.engine._fft import irfftn, rfftn
from cryoweave.engine._fsc import fsc
from cryoweave.engine._geometry import euler_to_matrix
from cryoweave.engine._phantom import atoms_phantom
from cryoweave.engine._projection import project

OPTICS = {"voltage_kv": 300.0, "cs_mm": 2.7, "amplitude_contrast": 0.1}


def _random_poses(n, seed):
    rng = np.random.default_rng(seed)
    tilt = np.degrees(np.arccos(rng.uniform(-1, 1, n)))  # uniform on the sphere
    return euler_to_matrix(rng.uniform(-180, 180, n), tilt, rng.uniform(-180, 180, n))


def _simulate(box, n, seed, pixel=2.0):
    """Noiseless CTF-modulated, shifted projections of an atoms phantom."""
    rng = np.random.default_rng(seed)
    truth = atoms_phantom(box, pixel, n_atoms=80, seed=seed)
    a = _random_poses(n, seed + 1)
    origins = rng.uniform(-2, 2, (n, 2))
    du = rng.uniform(8000, 25000, n)
    ctf = ctf_2d(du, du - rng.uniform(0, 1500, n), rng.uniform(0, 180, n), pixel_size_a=pixel,
                 box_px=box, dtype=np.float32, **OPTICS)
    return truth, project(truth, a, origin_xy_px=origins, ctf=ctf), a, origins, ctf


# ---------------------------------------------------------------- the blob and its convolution


def _blob_transform_by_quadrature(w, radius, alpha):
    """4π ∫ b(r) r² sinc(2wr) dr of the order-0 Kaiser–Bessel blob b(r) = I₀(α√(1−r²/a²))/I₀(α),
    normalised to 1 at w = 0."""
    def blob(r):
        return special.i0(alpha * np.sqrt(1 - (r / radius) ** 2)) / special.i0(alpha)

    def transform(f):
        return integrate.quad(lambda r: blob(r) * r**2 * np.sinc(2 * f * r), 0, radius,
                              limit=200, epsabs=1e-13, epsrel=1e-11)[0]

    return np.array([transform(f) for f in w]) / transform(0.0)


@pytest.mark.parametrize(("radius", "alpha"), [(3.8, 15.0), (10.0, 15.0), (2.0, 3.6)])
def test_blob_transform_matches_quadrature(radius, alpha):
    # radius 10: 2π·a·w passes α inside w < 0.5, so the oscillating (Bessel J) branch is used
    w = np.array([0.0, 0.01, 0.05, 0.1, 0.2, 0.2387, 0.3, 0.45])
    expected = _blob_transform_by_quadrature(w, radius, alpha)
    ours = gridding.blob_fourier_transform(w, radius, alpha)
    np.testing.assert_allclose(ours, expected, rtol=1e-7, atol=1e-9)
    assert gridding.blob_fourier_transform(np.array([0.5, 0.7]), radius, alpha).max() == 0.0


@pytest.mark.parametrize("size", [17, 18])
def test_blob_multiplier_is_the_radial_transform_in_fft_layout(size):
    k = np.fft.fftfreq(size) * size
    r = np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2) / size
    expected = gridding.blob_fourier_transform(r).astype(np.float32)
    multiplier = gridding.blob_multiplier(size, np)
    assert multiplier.flags.c_contiguous  # it multiplies a C-ordered volume every iteration
    np.testing.assert_array_equal(multiplier, expected)


def _accumulated(box, n, seed):
    rng = np.random.default_rng(seed)
    accumulator = ReconstructionAccumulator.empty(box)
    accumulator.insert(rng.standard_normal((n, box, box)).astype(np.float32),
                       _random_poses(n, seed))
    return accumulator


def _smoothed(product):
    p = product.shape[0]
    return np.abs(rfftn(irfftn(product.astype(np.complex64), (p, p, p))
                        * gridding.blob_multiplier(p, np)))


def _normalised_weight(accumulator):
    """The accumulated weight as the gridding sees it (Friedel mates summed, mean 1 where
    sampled) and the sampled ball."""
    data, weight = accumulator.data_and_weight()
    gridding.add_friedel_mates(data, weight)
    weight /= weight[weight > 0].mean()
    p = accumulator.geometry.padded_px
    return weight, gridding.inside_radius(p, p // 2, np)


def test_gridding_weights_flatten_the_blob_smoothed_density():
    """(weight·w) ∗ blob → 1 inside the sampled ball (Pipe & Menon's fixed point)."""
    accumulator = _accumulated(20, 150, seed=3)
    weight, inside = _normalised_weight(accumulator)
    p = accumulator.geometry.padded_px
    core = gridding.inside_radius(p, 0.8 * p // 2, np)  # away from the edge of the ball
    errors = []
    for iterations in (0, 1, 3, 10):
        w = gridding.gridding_weights(weight, inside, iterations)
        errors.append(np.abs(_smoothed(w * weight)[core] - 1).max())
    assert errors[0] > 10  # w = 1: the density varies with radius (∝ 1/r²) and between views
    assert errors[1] < errors[0] and errors[2] < errors[1] and errors[3] < errors[2]
    assert errors[3] < 0.05  # measured 0.035 (0.020 after 20 iterations)
    w = gridding.gridding_weights(weight, inside, 10)
    assert w.dtype == np.float32 and not w[~inside | (weight == 0)].any()


@pytest.mark.parametrize("p", [24, 25])
def test_symmetric_transforms_equal_the_full_ones_on_random_input(xp, p):
    """The gridding convolution on half the grid (`_symmetric_inverse`/`_forward`) equals full
    3-D transforms for any real, point-symmetric array: white noise, even and odd P."""
    rng = np.random.default_rng(p)
    noise = rng.standard_normal((p, p, p))
    mirror = (-np.arange(p)) % p
    symmetric = (noise + noise[mirror][:, mirror][:, :, mirror]) / 2  # f(−x) = f(x)
    spectrum = np.fft.rfftn(symmetric)  # real up to rounding
    assert np.abs(spectrum.imag).max() < 1e-9 * np.abs(spectrum).max()
    half = p // 2 + 1
    inverse = gridding._symmetric_inverse(xp.asarray(spectrum.real.astype(np.float32)), p, 1)
    forward = gridding._symmetric_forward(xp.asarray(symmetric[:half].astype(np.float32)), p, 1)
    assert inverse.shape == (half, p, p) and inverse.dtype == xp.float32
    assert forward.shape == spectrum.shape and forward.dtype == xp.float32
    inverse, forward = (np.asarray(a.get() if hasattr(a, "get") else a)
                        for a in (inverse, forward))
    np.testing.assert_allclose(inverse, symmetric[:half], atol=1e-5 * np.abs(symmetric).max())
    np.testing.assert_allclose(forward, spectrum.real, atol=1e-5 * np.abs(spectrum).max())


def test_gridding_weights_equal_the_full_transform_iteration():
    """Ten iterations on half the grid give the weights of full 3-D transforms (the previous
    formulation, kept here as the reference) to float32 rounding."""
    accumulator = _accumulated(20, 150, seed=4)
    weight, inside = _normalised_weight(accumulator)
    reference = (inside & (weight > 0)).astype(np.float32)
    for _ in range(10):
        reference /= np.maximum(_smoothed(reference * weight.astype(np.float32)), 1e-6)
    ours = gridding.gridding_weights(weight, inside, 10)
    np.testing.assert_allclose(ours, reference, rtol=2e-5, atol=1e-6 * reference.max())


def test_friedel_mates_on_the_x0_plane_are_summed():
    rng = np.random.default_rng(4)
    p = 10
    data = rng.standard_normal((p, p, 6)) + 1j * rng.standard_normal((p, p, 6))
    weight = rng.random((p, p, 6))
    before_data, before_weight = data.copy(), weight.copy()
    gridding.add_friedel_mates(data, weight)
    mirror = (-np.arange(p)) % p
    expected = before_data[:, :, 0] + np.conj(before_data[mirror][:, mirror, 0])
    np.testing.assert_allclose(data[:, :, 0], expected, atol=1e-14)
    np.testing.assert_allclose(data[:, :, 0], np.conj(data[mirror][:, mirror, 0]), atol=1e-14)
    np.testing.assert_allclose(weight[:, :, 0],
                               before_weight[:, :, 0] + before_weight[mirror][:, mirror, 0])
    np.testing.assert_array_equal(data[:, :, 1:], before_data[:, :, 1:])


@pytest.mark.parametrize("box", [24, 25])
def test_mask_corners_keeps_the_inscribed_ball_and_flattens_the_corners(box):
    rng = np.random.default_rng(box)
    volume = rng.standard_normal((box, box, box))
    masked = gridding.mask_corners(volume)
    c = (np.arange(box) - box // 2) ** 2
    r = np.sqrt(c[:, None, None] + c[None, :, None] + c[None, None, :])
    inside, outside = r < box / 2, r > box / 2 + 3
    np.testing.assert_array_equal(masked[inside], volume[inside])
    background = masked[outside]
    assert np.ptp(background) < 1e-12
    # the background is the raised-cosine-weighted mean of the region beyond radius N/2
    edge = np.clip((r - box / 2) / 3, 0, 1)
    weights = np.where(r < box / 2, 0, 0.5 - 0.5 * np.cos(np.pi * edge))
    assert background[0] == pytest.approx((weights * volume).sum() / weights.sum(), abs=1e-12)


# ---------------------------------------------------------------- insertion and the map


@pytest.mark.parametrize("box", [12, 13])
def test_each_friedel_pair_of_image_pixels_is_inserted_once(box):
    """Total weight = number of kept half-plane pixels, the kx = 0 column counted once per pair
    (a real image's (0, ky) and (0, −ky) are one pair and land on the same sample)."""
    accumulator = ReconstructionAccumulator.empty(box)
    accumulator.insert(np.ones((1, box, box), np.float32), np.eye(3)[None])
    _, kx, ky, _, _ = accumulator.geometry._pixels
    column = (kx == 0) & (ky != 0) & (2 * np.abs(ky) != box)
    expected = len(kx) - column.sum() / 2
    assert accumulator.sums[:, 2].sum() == pytest.approx(expected, rel=1e-12)


def test_gridding_beats_plain_division_at_high_resolution():
    """Noiseless data: the default map (gridding weights, corners masked, as relion_reconstruct)
    is as close to the truth as data / weight where both are near 1 and much closer at the
    highest shells up to 0.8 Nyquist."""
    box = 32
    truth, images, a, origins, ctf = _simulate(box, 600, seed=11)
    accumulator = ReconstructionAccumulator.empty(box)
    accumulator.insert(images, a, ctf=ctf, origin_xy_px=origins)
    up_to = int(0.8 * box / 2)
    new = fsc(accumulator.reconstruct(), truth).values[1 : up_to + 1]
    old = fsc(accumulator.reconstruct(gridding_iterations=0, mask_corners=False),
              truth).values[1 : up_to + 1]
    # equal to ±5e-4 where both are ≥ 0.997; measured +0.029 and +0.109 at the top two shells
    assert (new >= old - 5e-4).all(), np.round(new - old, 4)
    assert new[-2] > old[-2] + 0.015 and new[-1] > old[-1] + 0.06, np.round(new - old, 4)
    assert new.min() > 0.94


def test_reconstruction_is_deterministic(xp):
    box = 16
    _, images, a, origins, ctf = _simulate(box, 60, seed=21)
    images, a, ctf = xp.asarray(images), xp.asarray(a), xp.asarray(ctf)
    maps = [reconstruct(images, a, ctf=ctf, origin_xy_px=origins) for _ in range(2)]
    assert maps[0].dtype == xp.float32 and maps[0].shape == (box, box, box)
    np.testing.assert_array_equal(to_host(maps[0]), to_host(maps[1]))
    accumulator = ReconstructionAccumulator.empty(box, xp=xp)
    accumulator.insert(images, a, ctf=ctf, origin_xy_px=origins)
    for kwargs in ({}, {"gridding_iterations": 0}, {"mask_corners": False}):
        np.testing.assert_array_equal(to_host(accumulator.reconstruct(**kwargs)),
                                      to_host(accumulator.reconstruct(**kwargs)))
    np.testing.assert_array_equal(to_host(accumulator.reconstruct()), to_host(maps[0]))


def test_reconstruct_argument_errors():
    accumulator = _accumulated(8, 3, seed=1)
    for bad in (-1, 2.5, 101, 2**70):  # 2**70 iterations would run for ever
        with pytest.raises(ValueError, match="gridding_iterations"):
            accumulator.reconstruct(gridding_iterations=bad)
    with pytest.raises(ValueError, match="regularization"):
        accumulator.reconstruct(regularization=-1.0)


@pytest.mark.parametrize("p", [12, 13])
def test_fold_grid_is_the_adjoint_of_extend_grid(p):
    """⟨extend(x), y⟩ = ⟨x, fold(y)⟩ on random grids, P even and odd; folding into the parts
    of a complex64 grid, and adding a second grid into them, give the same sums."""
    from cryoweave.engine._slicing import extend_grid, fold_grid

    rng = np.random.default_rng(p)
    x = rng.standard_normal((p, p, p // 2 + 1))
    y = rng.standard_normal((p + 2, p + 2, p // 2 + 2))
    y[:, :, -1] = 0  # the zero column on x: extend_grid leaves it empty
    assert np.isclose(np.vdot(extend_grid(x), y), np.vdot(x, fold_grid(y)), rtol=1e-12)
    z = rng.standard_normal(y.shape)
    out = np.empty(x.shape, np.complex64)
    fold_grid(y, out.real)
    fold_grid(z, out.imag)
    fold_grid(z, out.real, add=True)
    expected = fold_grid(y) + fold_grid(z) + 1j * fold_grid(z)
    np.testing.assert_allclose(out, expected, rtol=0, atol=2e-6 * np.abs(expected).max())


def test_the_map_equals_the_float64_recipe():
    """reconstruct() folds the sums straight into complex64/float32 grids; the map equals the
    recipe done on the float64 grids of `data_and_weight` (Friedel mates, mean-1 weights,
    gridding weights, inverse FFT, crop, sinc², corners) to float32 rounding."""
    from cryoweave.engine._slicing import trilinear_gridding_correction

    accumulator = _accumulated(20, 150, seed=4)
    data, weight = accumulator.data_and_weight()
    gridding.add_friedel_mates(data, weight)
    sampled = weight > 0
    mean = weight[sampled].mean()
    weight = weight / mean + 1e-3 * sampled
    n, p = 20, accumulator.geometry.padded_px
    inside = gridding.inside_radius(p, accumulator.geometry.r_max_px * p / n, np)
    data = data * gridding.gridding_weights(weight, inside, 10) / mean
    window = (np.arange(n) - n // 2) % p
    volume = irfftn(data, (p, p, p))[window][:, window][:, :, window]
    expected = gridding.mask_corners(volume / trilinear_gridding_correction(n, p, np))
    ours = accumulator.reconstruct()
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, rtol=0, atol=2e-6 * np.abs(expected).max())
