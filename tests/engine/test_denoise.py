"""TV denoising (Xmipp's model): against a float64 transcription of Xmipp's algorithm, science
(error to a known clean image), objective decrease, intensity range, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from cryoweave.engine import to_host
from cryoweave.engine._denoise import denoise_tv, denoise_tv_inplace

# ----------------------------------------------------------- slow, obvious reference (float64)


def _xmipp_tv_reference(image: np.ndarray, iterations: int) -> np.ndarray:
    """Xmipp's denoiseTVFilter written out with full arrays and np.roll, in float64, followed by
    our fix (back to the input range). Stops early only on a zero step (see _denoise notes)."""
    lam, sigma_g, g, q, mu, beta = 1.0, 5.8, 0.0, 255.0, 0.03, 1e-5
    x = image.astype(np.float64)
    low, high = x.min(), x.max()
    k1 = 3.0 / 8.0 * lam * lam + sigma_g**2 - lam * g
    anscombe = 2.0 / lam * np.sqrt(np.maximum(0.0, lam * (x - low) * (255.0 / (high - low)) + k1))
    s = anscombe.max()
    target = anscombe / s

    def energy(xx):
        dx, dy = np.roll(xx, -1, 1) - xx, np.roll(xx, -1, 0) - xx
        vst = 2.0 / lam * np.sqrt(np.maximum(0.0, lam * q * xx + k1)) / s
        return 0.5 * ((vst - target) ** 2).sum() + mu * np.sqrt(dx**2 + dy**2 + beta**2).sum()

    def gradient(xx):
        dx, dy = np.roll(xx, -1, 1) - xx, np.roll(xx, -1, 0) - xx
        w = 1.0 / np.sqrt(dx**2 + dy**2 + beta**2)
        w_left, w_up = np.roll(w, 1, 1), np.roll(w, 1, 0)
        d_tv = (xx * (2 * w + w_left + w_up) - np.roll(xx, 1, 1) * w_left
                - np.roll(xx, 1, 0) * w_up - w * (np.roll(xx, -1, 1) + np.roll(xx, -1, 0)))
        d_e = 2 * q / (lam * s * s) - (q / s**2) * target / np.sqrt(xx * q * lam / s**2
                                                                    + k1 / s**2)
        return d_e + mu * d_tv

    def direction(xx, gg, theta):
        return np.clip(xx - theta * gg, 0.0, 1.0) - xx

    x_old = target.copy()
    f_old, g_old = energy(x_old), gradient(x_old)
    d = direction(x_old, g_old, 1.0)
    for _ in range(iterations):
        delta = (g_old * d).sum()
        x_new = x_old + d
        f_new, xi = energy(x_new), 1.0
        while f_new > f_old + 1e-4 * xi * delta:
            xi_q = -0.5 * xi * xi * delta / (f_new - f_old - xi * delta)
            xi = xi_q if 0.1 <= xi_q <= 0.9 * xi else xi / 2
            x_new = x_old + xi * d
            f_new = energy(x_new)
        g_new = gradient(x_new)
        step = x_new - x_old
        p, s2 = (step * (g_new - g_old)).sum(), (step * step).sum()
        if s2 == 0:
            break
        theta = 1000.0 if p <= 0 else min(1000.0, max(0.001, s2 / p))
        d = direction(x_new, g_new, theta)
        x_old, g_old, f_old = x_new, g_new, f_new
    return low + x_old * (high - low)


def _phantom(shape, rng, counts=40.0):
    """Piecewise-constant image (discs and a bar) and a Poisson–Gaussian noisy version."""
    y, x = np.indices(shape)
    clean = np.full(shape, 1.0)
    clean[(y - shape[0] * 0.35) ** 2 + (x - shape[1] * 0.4) ** 2 < (shape[0] * 0.2) ** 2] = 3.0
    clean[(y - shape[0] * 0.7) ** 2 + (x - shape[1] * 0.7) ** 2 < (shape[0] * 0.12) ** 2] = 2.0
    clean[int(shape[0] * 0.1):int(shape[0] * 0.2), int(shape[1] * 0.1):int(shape[1] * 0.8)] = 0.3
    noisy = rng.poisson(clean * counts) + rng.normal(0.0, 2.0, shape)
    return clean * counts, noisy


# -------------------------------------------------------------------------------- reference


@pytest.mark.parametrize("shape", [(23, 31), (24, 24), (17, 40)])
@pytest.mark.parametrize("block_rows", [None, 1, 4])
def test_matches_a_transcription_of_xmipp_in_float64(shape, block_rows):
    rng = np.random.default_rng(sum(shape))
    _, noisy = _phantom(shape, rng)
    ours = denoise_tv_inplace(noisy[None].copy(), 15, _block_rows=block_rows)[0]
    np.testing.assert_allclose(ours, _xmipp_tv_reference(noisy, 15), rtol=0, atol=1e-9 * 120)


def test_float32_close_to_the_float64_reference():
    rng = np.random.default_rng(3)
    _, noisy = _phantom((40, 36), rng)
    ours = denoise_tv(noisy.astype(np.float32), 20)
    assert ours.dtype == np.float32
    scale = noisy.max() - noisy.min()
    # float32 rounding (measured ≈ 6e-6 of the range); denoising itself moves pixels by ≈ 10 %
    np.testing.assert_allclose(ours, _xmipp_tv_reference(noisy, 20), rtol=0, atol=1e-4 * scale)


def test_backends_agree(xp):
    rng = np.random.default_rng(4)
    _, noisy = _phantom((30, 26), rng)
    images = np.stack([noisy, noisy[::-1]]).astype(np.float32)
    ours = to_host(denoise_tv(xp.asarray(images), 10))
    for got, image in zip(ours, images, strict=True):
        np.testing.assert_allclose(got, _xmipp_tv_reference(image.astype(np.float64), 10),
                                   rtol=0, atol=1e-4 * (image.max() - image.min()))


# --------------------------------------------------------------------------------- science


def test_denoising_reduces_the_error_to_the_clean_image():
    rng = np.random.default_rng(5)
    clean, noisy = _phantom((96, 80), rng)
    denoised = denoise_tv(noisy.astype(np.float32), 50)
    error_before = np.sqrt(np.mean((noisy - clean) ** 2))
    error_after = np.sqrt(np.mean((denoised - clean) ** 2))
    assert error_after < 0.6 * error_before, (error_before, error_after)


def test_objective_decreases_monotonically():
    rng = np.random.default_rng(6)
    _, noisy = _phantom((48, 50), rng)
    history: list[list[float]] = []
    denoise_tv_inplace(noisy[None].astype(np.float32), 30, history=history)
    energies = np.array(history[0])
    assert len(energies) == 31
    assert np.all(np.diff(energies) < 0)
    assert energies[-1] < 0.5 * energies[0]


def test_output_lies_in_the_input_range_and_follows_its_scale():
    rng = np.random.default_rng(7)
    _, noisy = _phantom((40, 44), rng)
    out = denoise_tv(noisy, 20)
    assert noisy.min() <= out.min() and out.max() <= noisy.max()
    # the rescaling is undone exactly: an affine change of the input carries over
    scaled = denoise_tv(3.5 * noisy - 1000.0, 20)
    np.testing.assert_allclose(scaled, 3.5 * out - 1000.0, rtol=0, atol=1e-8 * 3500)
    # and the level is kept: mean within a small fraction of the range
    assert abs(out.mean() - noisy.mean()) < 0.02 * (noisy.max() - noisy.min())


def test_deterministic_and_independent_of_threads_and_blocks():
    rng = np.random.default_rng(8)
    _, noisy = _phantom((64, 40), rng)
    image = noisy.astype(np.float32)[None]
    first = denoise_tv_inplace(image.copy(), 12, workers=1)
    again = denoise_tv_inplace(image.copy(), 12, workers=1)
    threads = denoise_tv_inplace(image.copy(), 12, workers=2, _block_rows=5)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, denoise_tv_inplace(image.copy(), 12, workers=2))
    # other blocks sum in another order: float32 rounding only
    np.testing.assert_allclose(threads, first, rtol=0, atol=1e-4 * (noisy.max() - noisy.min()))


def test_batch_equals_images_one_by_one_and_input_untouched():
    rng = np.random.default_rng(9)
    stack = np.stack([_phantom((20, 28), rng)[1] for _ in range(3)]).astype(np.float32)
    before = stack.copy()
    batch = denoise_tv(stack, 8)
    np.testing.assert_array_equal(stack, before)
    for got, image in zip(batch, stack, strict=True):
        np.testing.assert_array_equal(got, denoise_tv(image, 8))


def test_constant_image_is_unchanged():
    image = np.full((12, 9), 7.0, np.float32)
    np.testing.assert_array_equal(denoise_tv(image, 5), image)


@pytest.mark.parametrize("iterations", [0, -3, 2.5, True, 10_001, 2**70])
def test_rejects_bad_iteration_counts(iterations):
    with pytest.raises(ValueError, match="denoise_iterations"):
        denoise_tv(np.ones((8, 8), np.float32), iterations)
