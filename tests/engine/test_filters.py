"""Raised-cosine low-pass (Å), B-factor sharpening and soft masks."""

from __future__ import annotations

import numpy as np
import pytest

from cryoweave.engine import to_host
from cryoweave.engine._filters import (
    apply_bfactor,
    lowpass_filter_a,
    soft_cylinder_mask,
    soft_sphere_mask,
)


def _cosine_volume(n, k):
    """cos(2π k x / N) along x: all energy at Fourier radius k."""
    x = np.arange(n)
    return np.broadcast_to(np.cos(2 * np.pi * k * x / n), (n, n, n)).copy()


def test_lowpass_keeps_below_and_removes_above_cutoff(xp):
    n, pixel = 32, 2.0  # 10 Å cutoff = N·pixel/10 = 6.4 Fourier px, edge ±1 px
    low, high, edge = _cosine_volume(n, 4), _cosine_volume(n, 9), _cosine_volume(n, 6)

    def out(v):
        return to_host(lowpass_filter_a(xp.asarray(v), 10.0, pixel, edge_width_px=2.0))

    np.testing.assert_allclose(out(low), low, atol=1e-12)
    np.testing.assert_allclose(out(high), 0.0, atol=1e-12)
    # radius 6 is 0.6 px into the edge [5.4, 7.4]: (1 + cos(π·0.3))/2
    np.testing.assert_allclose(out(edge), edge * (1 + np.cos(np.pi * 0.3)) / 2, atol=1e-12)


def test_lowpass_images_and_dtype():
    images = np.random.default_rng(0).standard_normal((3, 16, 16)).astype(np.float32)
    out = lowpass_filter_a(images, 8.0, 1.0, ndim=2)
    assert out.shape == images.shape and out.dtype == np.float32
    assert np.abs(np.fft.rfft2(out)[:, 0, 5:]).max() < 1e-4  # 16/8 = 2 px cutoff
    with pytest.raises(ValueError, match="resolution_a"):
        lowpass_filter_a(images, 0.0, 1.0, ndim=2)


def test_bfactor_exact_and_invertible():
    n, pixel, k, bfactor = 24, 1.5, 5, 100.0
    volume = _cosine_volume(n, k)
    u = k / (n * pixel)
    np.testing.assert_allclose(apply_bfactor(volume, bfactor, pixel),
                               volume * np.exp(-bfactor * u * u / 4), atol=1e-12)
    rng = np.random.default_rng(1)
    noise = rng.standard_normal((n, n, n))
    back = apply_bfactor(apply_bfactor(noise, -80.0, pixel), 80.0, pixel)
    np.testing.assert_allclose(back, noise, atol=1e-10)


@pytest.mark.parametrize("n", [32, 33])
def test_soft_sphere_mask(xp, n):
    mask = to_host(soft_sphere_mask(n, 8.0, edge_width_px=4.0, xp=xp))
    c = n // 2
    assert mask[c, c, c] == 1.0 and mask.dtype == np.float32
    assert mask[c, c, c + 8] == 1.0 and mask[c, c, c + 12] == 0.0
    assert mask[c, c, c + 10] == pytest.approx(0.5)
    profile = mask[c, c, c:]
    assert np.all(np.diff(profile) <= 0)
    circle = soft_sphere_mask(n, 8.0, edge_width_px=0.0, ndim=2)
    assert circle.shape == (n, n) and set(np.unique(circle)) == {0.0, 1.0}


def test_soft_cylinder_mask_is_along_z():
    n = 32
    mask = soft_cylinder_mask(n, 6.0, 20.0, edge_width_px=2.0)
    c = n // 2
    assert mask[c, c, c] == 1.0
    assert mask[c + 9, c, c] == 1.0 and mask[c + 12, c, c] == 0.0  # caps at |z| = 10 (+2)
    assert mask[c, c + 6, c] == 1.0 and mask[c, c + 8, c] == 0.0  # side at r = 6 (+2)
    assert mask[c + 11, c, c] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="height_px"):
        soft_cylinder_mask(n, 6.0, 0.0)
