"""CTF (RELION formula): hand-computed values, symmetry, astigmatism direction, helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cryoweave.engine import to_host
from cryoweave.engine._ctf import (
    ctf_2d,
    electron_wavelength_a,
    group_identical_ctfs,
    phase_flip,
    wiener_filter,
)

OPTICS = {"voltage_kv": 300.0, "cs_mm": 2.7, "amplitude_contrast": 0.1}


def test_wavelength_by_hand():
    # λ = 12.2643247 / sqrt(V (1 + 0.978466e-6 V)), V in volts
    assert electron_wavelength_a(300.0) == pytest.approx(
        12.2643247 / math.sqrt(300e3 * (1 + 0.978466e-6 * 300e3)), rel=1e-12)
    assert electron_wavelength_a(300.0) == pytest.approx(0.0196876, abs=1e-7)
    assert electron_wavelength_a(200.0) == pytest.approx(0.0250795, abs=1e-7)


def _hand_ctf(u, defocus_a, phase_shift_deg=0.0, bfactor=0.0, q0=0.1):
    lam = 12.2643247 / math.sqrt(300e3 * (1 + 0.978466e-6 * 300e3))
    gamma = (math.pi * lam * defocus_a * u**2 - math.pi / 2 * 2.7e7 * lam**3 * u**4
             + math.radians(phase_shift_deg))
    value = math.sqrt(1 - q0**2) * math.sin(gamma) + q0 * math.cos(gamma)
    return value * math.exp(-bfactor * u**2 / 4)


def test_values_by_hand():
    # box 10 at 1 Å/px: pixel (ky, kx) = (0, 1) is u = 0.1/Å along +x, (1, 0) along +y.
    # U = 20000 Å, V = 10000 Å, angle 0: D = U along x, D = V along y.
    ctf = ctf_2d(20000.0, 10000.0, 0.0, pixel_size_a=1.0, box_px=10, dtype=np.float64, **OPTICS)
    assert ctf.shape == (1, 10, 6)
    assert ctf[0, 0, 1] == pytest.approx(_hand_ctf(0.1, 20000.0), abs=1e-12)
    assert ctf[0, 1, 0] == pytest.approx(_hand_ctf(0.1, 10000.0), abs=1e-12)
    # γ(0.1/Å, U) = π·0.0196875·20000·0.01 − π/2·2.7e7·0.0196875³·1e-4 = 12.3702 − 0.0324
    assert ctf[0, 0, 1] == pytest.approx(
        math.sqrt(0.99) * math.sin(12.33785) + 0.1 * math.cos(12.33785), abs=2e-4)
    # diagonal pixel (1, 1): φ = 45°, D = 15000 + 5000·cos 90° = 15000, u = √2/10
    assert ctf[0, 1, 1] == pytest.approx(_hand_ctf(math.sqrt(2) / 10, 15000.0), abs=1e-12)
    shifted = ctf_2d(20000.0, 10000.0, 0.0, pixel_size_a=1.0, box_px=10, phase_shift_deg=90,
                     bfactor=50.0, scale=0.5, dtype=np.float64, **OPTICS)
    expected = 0.5 * _hand_ctf(0.1, 20000.0, phase_shift_deg=90.0, bfactor=50.0)
    assert shifted[0, 0, 1] == pytest.approx(expected, abs=1e-12)


def test_astigmatism_angle_is_measured_from_x_toward_y():
    # angle 45°: φ = +45° (kx = ky = k, +y = increasing row index) sees U, φ = −45° sees V
    box, k = 64, 7
    ctf = ctf_2d(25000.0, 5000.0, 45.0, pixel_size_a=1.0, box_px=box, dtype=np.float64,
                 **OPTICS)[0]
    u = math.sqrt(2) * k / box
    assert ctf[k, k] == pytest.approx(_hand_ctf(u, 25000.0), abs=1e-12)
    assert ctf[box - k, k] == pytest.approx(_hand_ctf(u, 5000.0), abs=1e-12)
    # angle 90°: U along +y (rows), V along +x (columns)
    ctf = ctf_2d(25000.0, 5000.0, 90.0, pixel_size_a=1.0, box_px=box, dtype=np.float64,
                 **OPTICS)[0]
    assert ctf[k, 0] == pytest.approx(_hand_ctf(k / box, 25000.0), abs=1e-12)
    assert ctf[0, k] == pytest.approx(_hand_ctf(k / box, 5000.0), abs=1e-12)


@pytest.mark.parametrize("box", [16, 15])
def test_friedel_symmetry_and_rfft_layout(xp, box):
    rng = np.random.default_rng(0)
    du = xp.asarray(rng.uniform(5000, 30000, 3))
    ctf_full = to_host(ctf_2d(du, du * 0.8, xp.asarray([10.0, 70.0, 150.0]), pixel_size_a=1.3,
                              box_px=box, rfft=False, phase_shift_deg=20, **OPTICS))
    mirror = (-np.arange(box)) % box
    inner = slice(0, box) if box % 2 else np.arange(box) != box // 2  # +N/2 has no −N/2 twin
    mirrored = ctf_full[:, mirror][:, :, mirror]
    np.testing.assert_array_equal(ctf_full[:, inner][:, :, inner], mirrored[:, inner][:, :, inner])
    half = ctf_2d(du, du * 0.8, xp.asarray([10.0, 70.0, 150.0]), pixel_size_a=1.3, box_px=box,
                  phase_shift_deg=20, **OPTICS)
    assert type(half) is type(du) and half.dtype == xp.float32
    np.testing.assert_allclose(to_host(half), ctf_full[:, :, : box // 2 + 1], atol=1e-6)


def test_positive_near_zero_frequency():
    ctf = ctf_2d([5000.0, 30000.0], 5000.0, 0.0, pixel_size_a=1.0, box_px=256, **OPTICS)
    assert np.all(ctf[:, 0, 0] == pytest.approx(0.1, abs=1e-6))  # u = 0: CTF = Q0
    assert np.all(ctf[:, 0, 1] > 0.1) and np.all(ctf[:, 1, 0] > 0.1)


def test_batch_matches_single_particles_and_float32_precision():
    rng = np.random.default_rng(1)
    du, dv, angle = rng.uniform(5000, 40000, 5), rng.uniform(5000, 40000, 5), rng.uniform(0, 180, 5)
    batch = ctf_2d(du, dv, angle, pixel_size_a=0.8, box_px=33, **OPTICS)
    for i in range(5):
        single = ctf_2d(du[i], dv[i], angle[i], pixel_size_a=0.8, box_px=33, dtype=np.float64,
                        **OPTICS)
        np.testing.assert_allclose(batch[i], single[0], atol=2e-6)  # float32 sine of γ mod 2π


def test_bad_parameters_raise():
    with pytest.raises(ValueError, match="amplitude_contrast"):
        ctf_2d(1e4, 1e4, 0, voltage_kv=300, cs_mm=2.7, amplitude_contrast=1.5, pixel_size_a=1,
               box_px=8)
    with pytest.raises(ValueError, match="2 values but there are 3"):
        ctf_2d([1e4, 2e4], 1e4, [0, 1, 2], pixel_size_a=1, box_px=8, **OPTICS)
    with pytest.raises(ValueError, match="pixel_size_a"):
        ctf_2d(1e4, 1e4, 0, pixel_size_a=0, box_px=8, **OPTICS)


def test_phase_flip_and_wiener(xp):
    ctf = xp.asarray(np.array([[0.5, -0.25, 0.0]], dtype=np.float32))
    spectra = xp.asarray(np.array([[1 + 1j, 2 - 1j, 3j]], dtype=np.complex64))
    np.testing.assert_allclose(to_host(phase_flip(spectra, ctf)), [[1 + 1j, -2 + 1j, 0]])
    wiener = to_host(wiener_filter(spectra, ctf, wiener_constant=0.1))
    np.testing.assert_allclose(wiener, [[(1 + 1j) * 0.5 / 0.35, (2 - 1j) * -0.25 / 0.1625, 0]],
                               rtol=1e-6)
    with pytest.raises(ValueError, match="wiener_constant"):
        wiener_filter(spectra, ctf, wiener_constant=0)


def test_group_identical_ctfs(xp):
    rows = np.array([[1e4, 9e3, 10.0], [2e4, 2e4, 0.0], [1e4, 9e3, 10.0], [1e4, 9e3, 11.0],
                     [2e4, 2e4, 0.0]])
    unique, inverse = group_identical_ctfs(xp.asarray(rows))
    unique, inverse = to_host(unique), to_host(inverse)
    assert unique.shape == (3, 3)
    np.testing.assert_array_equal(unique[inverse], rows)
    ctf_once = ctf_2d(*unique.T, pixel_size_a=1.0, box_px=12, **OPTICS)[inverse]
    np.testing.assert_array_equal(ctf_once, ctf_2d(*rows.T, pixel_size_a=1.0, box_px=12, **OPTICS))
