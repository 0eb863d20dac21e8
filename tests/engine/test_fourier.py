"""Fourier crop / pad: against a direct-DFT reference, invariants, properties, and RELION."""

from __future__ import annotations

import itertools
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryoweave.engine import (
    fourier_crop,
    fourier_crop_volume,
    fourier_crop_working_bytes,
    fourier_pad,
    fourier_pad_volume,
    to_host,
)
from cryoweave.engine._fourier import _crop_full

CROP_2D = [(9, 4), (10, 6), (12, 7), (16, 8), (15, 5), (11, 10), (5, 4), (10, 2), (10, 1), (8, 8)]
CROP_3D = [(12, 8), (11, 6), (9, 5), (8, 7)]


def _crop(x, d, ndim):
    return fourier_crop(x, d) if ndim == 2 else fourier_crop_volume(x, d)


def _pad(x, big, ndim):
    return fourier_pad(x, big) if ndim == 2 else fourier_pad_volume(x, big)


# ---------------------------------------------------------------- slow, obvious reference (float64)


def _dft_matrix(n: int) -> np.ndarray:
    k = np.arange(n)
    return np.exp(-2j * np.pi * np.outer(k, k) / n)


def _dft(x: np.ndarray, inverse: bool = False) -> np.ndarray:
    """Direct DFT over every axis of one image/volume (unnormalised forward, 1/N inverse)."""
    out = x.astype(np.complex128)
    for axis, n in enumerate(x.shape):
        matrix = _dft_matrix(n).conj() / n if inverse else _dft_matrix(n)
        out = np.moveaxis(np.tensordot(matrix, out, axes=([1], [axis])), 0, axis)
    return out


def _signed_window(d: int) -> range:
    """Signed wave numbers kept along a full axis: −(d − d//2 − 1) … d//2 (even d: +Nyquist)."""
    return range(-(d - d // 2 - 1), d // 2 + 1)


def _kept_wave_numbers(d: int, ndim: int) -> set[tuple[int, ...]]:
    """RELION's half-space window (x ∈ 0 … d//2, other axes `_signed_window`), closed under
    k -> −k because the cropped spectrum is that of a real image."""
    half = {
        (*k, kx)
        for k in itertools.product(_signed_window(d), repeat=ndim - 1)
        for kx in range(d // 2 + 1)
    }
    return half | {tuple(-c for c in k) for k in half}


def _alias_counts(d: int, ndim: int) -> np.ndarray:
    """How many kept wave numbers land on each point of the d grid (2 where ±Nyquist alias)."""
    counts = np.zeros((d,) * ndim)
    for k in _kept_wave_numbers(d, ndim):
        counts[tuple(c % d for c in k)] += 1
    return counts


def _reference_crop(x: np.ndarray, d: int) -> np.ndarray:
    """Each d-grid frequency = mean of the input spectrum over the kept wave numbers aliasing to
    it; inverse direct DFT, real part, times (d/D)^ndim."""
    big, ndim = x.shape[0], x.ndim
    spectrum = _dft(x)
    cropped = np.zeros((d,) * ndim, dtype=np.complex128)
    for k in _kept_wave_numbers(d, ndim):
        cropped[tuple(c % d for c in k)] += spectrum[tuple(c % big for c in k)]
    cropped /= _alias_counts(d, ndim)
    return np.real(_dft(cropped, inverse=True)) * (d / big) ** ndim


# ------------------------------------------------------------------------------------ reference


@pytest.mark.parametrize(("big", "d"), CROP_2D)
def test_crop_matches_direct_dft_reference(xp, big, d):
    rng = np.random.default_rng(big * 100 + d)
    images = rng.standard_normal((3, big, big))
    got = to_host(fourier_crop(xp.asarray(images), d))
    want = np.stack([_reference_crop(image, d) for image in images])
    assert got.shape == (3, d, d) and got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())


@pytest.mark.parametrize(("big", "d"), CROP_3D)
def test_crop_volume_matches_direct_dft_reference(xp, big, d):
    volume = np.random.default_rng(big * 100 + d).standard_normal((big, big, big))
    got = to_host(fourier_crop_volume(xp.asarray(volume), d))
    want = _reference_crop(volume, d)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())


@pytest.mark.parametrize(("big", "d"), [(16, 8), (12, 7), (9, 4)])
def test_float32_in_float32_out_close_to_float64(xp, big, d):
    images = np.random.default_rng(0).standard_normal((2, big, big)).astype(np.float32)
    got = fourier_crop(xp.asarray(images), d)
    assert got.dtype == xp.float32 and type(got) is type(xp.asarray(images))
    want = np.stack([_reference_crop(image.astype(np.float64), d) for image in images])
    # single-precision FFTs of size ≤ 16: a few ulps of the largest value
    np.testing.assert_allclose(to_host(got), want, rtol=0, atol=2e-6 * np.abs(want).max())


def test_crop_alias_counts_are_the_documented_nyquist_terms():
    # 2-D, even d: the Nyquist column and the (d/2, 0) point average two input frequencies.
    counts = _alias_counts(8, 2)
    doubled = np.zeros((8, 8), dtype=bool)
    doubled[:, 4] = True
    doubled[4, 0] = True
    np.testing.assert_array_equal(counts, np.where(doubled, 2, 1))
    np.testing.assert_array_equal(_alias_counts(7, 2), np.ones((7, 7)))


def test_naive_positive_nyquist_row_for_every_kx_is_not_what_relion_computes():
    """Cropping the full complex spectrum with the +d/2 row for *all* kx and taking the real
    part averages F(±d/2, kx) along the Nyquist row: it differs from the c2r of the cropped
    half spectrum, which keeps F(+d/2, kx ≥ 0) and F(−d/2, kx < 0)."""
    big, d = 16, 8
    image = np.random.default_rng(3).standard_normal((big, big))
    rows = np.r_[0 : d // 2 + 1, big - d // 2 + 1 : big]
    naive = np.real(np.fft.ifft2(np.fft.fft2(image)[np.ix_(rows, rows)])) * (d / big) ** 2
    ours = fourier_crop(image, d)
    assert np.abs(naive - ours).max() > 1e-3 * np.abs(ours).max()
    # the difference lives only at the Nyquist row frequency ky = d/2
    residual = np.fft.fft2(naive - ours)
    residual[d // 2] = 0
    assert np.abs(residual).max() < 1e-12 * np.abs(np.fft.fft2(ours)).max()


@pytest.mark.parametrize(
    ("big", "d", "ndim"), [(256, 128, 2), (255, 128, 2), (64, 37, 2), (33, 16, 3), (20, 13, 3)]
)
def test_pruned_transform_equals_full_transform(xp, big, d, ndim):
    x = np.random.default_rng(7).standard_normal((4,) + (big,) * ndim).astype(np.float32)
    pruned = to_host(_crop(xp.asarray(x), d, ndim))
    full = to_host(_crop_full(xp.asarray(x), d, ndim))
    np.testing.assert_allclose(pruned, full, rtol=0, atol=1e-6 * np.abs(full).max())


# ------------------------------------------------------------------------------------ invariants


@pytest.mark.parametrize(("big", "d", "ndim"), [(16, 8, 2), (15, 6, 2), (12, 7, 2), (11, 6, 3)])
def test_mean_is_preserved(xp, big, d, ndim):
    x = 3.0 + np.random.default_rng(1).standard_normal((2,) + (big,) * ndim)
    cropped = to_host(_crop(xp.asarray(x), d, ndim))
    padded = to_host(_pad(xp.asarray(x), big + 5, ndim))
    axes = tuple(range(1, ndim + 1))
    np.testing.assert_allclose(cropped.mean(axis=axes), x.mean(axis=axes), rtol=1e-12)
    np.testing.assert_allclose(padded.mean(axis=axes), x.mean(axis=axes), rtol=1e-12)


@pytest.mark.parametrize(
    ("d", "big", "ndim"), [(8, 16, 2), (7, 12, 2), (6, 9, 2), (4, 5, 2), (6, 11, 3), (5, 8, 3)]
)
def test_crop_of_pad_is_identity(xp, d, big, ndim):
    y = np.random.default_rng(2).standard_normal((2,) + (d,) * ndim).astype(np.float32)
    padded = _pad(xp.asarray(y), big, ndim)
    assert padded.shape == (2,) + (big,) * ndim and padded.dtype == xp.float32
    np.testing.assert_allclose(to_host(_crop(padded, d, ndim)), y, rtol=0, atol=1e-5)


def _halve_aliased(y: np.ndarray) -> np.ndarray:
    """M: divide each d-grid frequency by the number of kept inputs that the crop averages there."""
    d, ndim = y.shape[0], y.ndim
    return np.real(np.fft.ifftn(np.fft.fftn(y) / _alias_counts(d, ndim)))


@pytest.mark.parametrize(
    ("big", "d", "ndim"), [(9, 4, 2), (12, 7, 2), (16, 8, 2), (15, 5, 2), (12, 8, 3), (11, 5, 3)]
)
def test_adjoint_relation(big, d, ndim):
    """⟨crop x, y⟩ = (d/D)^ndim ⟨x, pad(M y)⟩; M = identity for odd d (see fourier_crop)."""
    rng = np.random.default_rng(big + d)
    x, y = rng.standard_normal((big,) * ndim), rng.standard_normal((d,) * ndim)
    scale = (d / big) ** ndim
    lhs = np.vdot(_crop(x, d, ndim), y)
    rhs = scale * np.vdot(x, _pad(_halve_aliased(y), big, ndim))
    assert lhs == pytest.approx(rhs, rel=1e-10)
    plain = scale * np.vdot(x, _pad(y, big, ndim))
    if d % 2:
        assert lhs == pytest.approx(plain, rel=1e-10)
    else:  # the Nyquist terms break the plain relation for even d
        assert abs(lhs - plain) > 1e-6 * abs(lhs)


def _band_limited(big: int, d: int, ndim: int, rng: np.random.Generator) -> np.ndarray:
    """Real random image/volume whose spectrum is zero unless every |k| < d/2."""
    k = np.abs(np.fft.fftfreq(big) * big)
    inside = np.ones((big,) * ndim, dtype=bool)
    for axis in range(ndim):
        shape = [1] * ndim
        shape[axis] = big
        inside &= (k < d / 2).reshape(shape)
    spectrum = rng.standard_normal(inside.shape) + 1j * rng.standard_normal(inside.shape)
    return np.real(np.fft.ifftn(spectrum * inside))


@pytest.mark.parametrize(("big", "d", "ndim"), [(16, 8, 2), (18, 6, 2), (15, 5, 2), (12, 6, 3)])
def test_band_limited_signal_is_decimated_with_scaled_energy(xp, big, d, ndim):
    x = _band_limited(big, d, ndim, np.random.default_rng(5))
    cropped = to_host(_crop(xp.asarray(x), d, ndim))
    # integer factor: the crop of a band-limited signal is plain decimation
    step = big // d
    np.testing.assert_allclose(cropped, x[(slice(None, None, step),) * ndim], atol=1e-12)
    energy_ratio = np.sum(cropped**2) / np.sum(x**2)
    assert energy_ratio == pytest.approx((d / big) ** ndim, rel=1e-12)
    padded = to_host(_pad(xp.asarray(cropped), big, ndim))
    np.testing.assert_allclose(padded, x, atol=1e-12)  # and pad interpolates it back


def test_stack_is_processed_image_by_image():
    images = np.random.default_rng(4).standard_normal((2, 3, 10, 10)).astype(np.float32)
    whole = fourier_crop(images, 6)
    assert whole.shape == (2, 3, 6, 6)
    single = fourier_crop(images[1, 2], 6)
    np.testing.assert_allclose(whole[1, 2], single, rtol=0, atol=1e-6)


def test_same_box_returns_a_copy():
    images = np.random.default_rng(4).standard_normal((2, 8, 8)).astype(np.float32)
    for result in (fourier_crop(images, 8), fourier_pad(images, 8)):
        assert result is not images and not np.shares_memory(result, images)
        np.testing.assert_array_equal(result, images)


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (np.float32, np.float32),
        (np.float64, np.float64),
        (np.int16, np.float32),
        (np.float16, np.float32),
    ],
)
def test_output_dtype(dtype, expected):
    images = np.arange(2 * 6 * 6).reshape(2, 6, 6).astype(dtype)
    assert fourier_crop(images, 4).dtype == expected
    assert fourier_pad(images, 8).dtype == expected


# ------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: fourier_crop(np.zeros((2, 8, 8)), 10), r"box_px=10 exceeds the input box 8"),
        (lambda: fourier_crop(np.zeros((2, 8, 8)), 0), r"box_px=0 must be a positive"),
        (lambda: fourier_crop(np.zeros((2, 8, 8)), -4), r"box_px=-4 must be a positive"),
        (lambda: fourier_crop(np.zeros((2, 8, 6)), 4), r"square.*8×6"),
        (lambda: fourier_crop(np.zeros(8), 4), r"\(\.\.\., y, x\).*\(8,\)"),
        (lambda: fourier_crop(np.zeros((8, 8)), 4.0), r"box_px=4.0 must be an integer"),
        (lambda: fourier_crop(np.zeros((8, 8)), True), r"box_px=True must be an integer"),
        (lambda: fourier_crop(np.zeros((8, 8), complex), 4), r"real images; got dtype complex"),
        (lambda: fourier_pad(np.zeros((2, 8, 8)), 6), r"box_px=6 is smaller than the input box 8"),
        (lambda: fourier_crop_volume(np.zeros((8, 8, 6)), 4), r"8×8×6"),
        (lambda: fourier_crop_volume(np.zeros((8, 8)), 4), r"\(\.\.\., z, y, x\)"),
        (lambda: fourier_pad_volume(np.zeros((8, 8, 8)), 0), r"box_px=0 must be a positive"),
    ],
)
def test_bad_shapes_and_boxes_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_non_array_input_is_a_type_error():
    with pytest.raises(TypeError, match="NumPy or CuPy array"):
        fourier_crop([[1.0, 2.0], [3.0, 4.0]], 1)


def test_working_bytes_covers_the_arrays_of_one_crop():
    # input 4·256², output 4·128², rfft 8·256·129, … — at least the input + rfft output.
    bytes_per_image = fourier_crop_working_bytes(256, 128)
    assert 4 * 256**2 + 8 * 256 * 129 < bytes_per_image < 4 * 4 * 256**2
    assert fourier_crop_working_bytes(64, 32, ndim=3) > 4 * 64**3
    assert fourier_crop_working_bytes(256, 128, itemsize=8) == 2 * bytes_per_image


# ------------------------------------------------------------------------------------ properties

sizes = st.integers(min_value=1, max_value=12).flatmap(
    lambda d: st.tuples(st.just(d), st.integers(min_value=d, max_value=d + 9))
)


@settings(max_examples=40, deadline=None)
@given(sizes=sizes, seed=st.integers(0, 2**32 - 1), ndim=st.sampled_from([2, 3]))
def test_property_pad_then_crop_round_trips(sizes, seed, ndim):
    d, big = sizes
    if ndim == 3:
        d, big = min(d, 6), min(big, 9)
    y = np.random.default_rng(seed).standard_normal((d,) * ndim)
    np.testing.assert_allclose(_crop(_pad(y, big, ndim), d, ndim), y, rtol=0, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(sizes=sizes, seed=st.integers(0, 2**32 - 1))
def test_property_crop_is_linear_and_pad_crop_is_a_projection(sizes, seed):
    d, big = sizes
    rng = np.random.default_rng(seed)
    x1, x2 = rng.standard_normal((2, big, big))
    a, b = rng.standard_normal(2)
    np.testing.assert_allclose(
        fourier_crop(a * x1 + b * x2, d),
        a * fourier_crop(x1, d) + b * fourier_crop(x2, d),
        rtol=0,
        atol=1e-12 * (1 + np.abs(x1).max() + np.abs(x2).max()),
    )
    once = fourier_pad(fourier_crop(x1, d), big)
    np.testing.assert_allclose(fourier_pad(fourier_crop(once, d), big), once, atol=1e-12)


# ------------------------------------------------------------------------------------ RELION

RELION = shutil.which("relion_image_handler")


def _run_relion_rescale(
    tmp_path: Path, data: np.ndarray, new_angpix: float, suffix: str
) -> np.ndarray:
    import mrcfile

    source, target = tmp_path / f"in{suffix}", tmp_path / f"out{suffix}"
    with mrcfile.new(source, overwrite=True) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = 1.0
    command = [RELION, "--i", str(source), "--o", str(target), "--rescale_angpix", str(new_angpix)]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    with mrcfile.open(target, permissive=True) as mrc:
        return np.asarray(mrc.data, dtype=np.float32)


@pytest.mark.external
@pytest.mark.skipif(RELION is None, reason="relion_image_handler is not on PATH")
@pytest.mark.parametrize(
    ("big", "new_angpix", "ndim"),
    [(256, 2.0, 2), (255, 2.0, 2), (256, 1.5, 2), (32, 2.0, 3), (31, 1.6, 3)],
)
def test_matches_relion_image_handler_rescale_angpix(tmp_path, big, new_angpix, ndim):
    """relion_image_handler --rescale_angpix runs resizeMap (windowFourierTransform + c2r) in
    double precision; it rounds the box, then makes it even (255 -> 128, 256 @1.5 Å -> 170,
    31 @1.6 Å -> 18)."""
    shape = (4,) + (big,) * 2 if ndim == 2 else (big,) * 3
    data = np.random.default_rng(big).standard_normal(shape).astype(np.float32)
    # RELION reads .mrcs as a stack of images and .mrc as one volume
    relion = _run_relion_rescale(tmp_path, data, new_angpix, ".mrcs" if ndim == 2 else ".mrc")
    d = relion.shape[-1]
    assert d == int(np.floor(big / new_angpix + 0.5)) // 2 * 2  # RELION: ROUND, then even
    ours = _crop(data, d, ndim)
    assert ours.shape == relion.shape
    # float32 in/out vs RELION's double transforms: measured ≤ 3e-7 relative
    assert np.abs(ours - relion).max() / np.abs(relion).max() < 1e-6


# ------------------------------------ white noise, float32, realistic boxes (issue 12 §1: GPU)
# CuPy disagreed with NumPy by 6.3 % on white-noise float32 256² -> 128: most likely cuFFT's C2R
# read the imaginary parts of the (non-Hermitian) Nyquist column. These bodies compare every
# backend with a float64 reference at the sizes where that showed, on input with full power at
# Nyquist.

WHITE_2D = [(256, 128), (256, 127), (256, 100), (256, 64), (255, 128), (255, 127), (129, 64),
            (128, 64), (100, 50), (99, 98)]


def _kept_index_arrays(d: int, big: int, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat (d-grid, D-grid) indices of every kept wave number (vectorised `_kept_wave_numbers`)."""
    kept = np.array(sorted(_kept_wave_numbers(d, ndim)))
    small = np.ravel_multi_index(tuple((kept % d).T), (d,) * ndim)
    large = np.ravel_multi_index(tuple((kept % big).T), (big,) * ndim)
    return small, large


def _reference_crop_fast(x: np.ndarray, d: int) -> np.ndarray:
    """`_reference_crop` with numpy.fft (float64) and an unbuffered add in place of the loop."""
    big, ndim = x.shape[-1], x.ndim - 1
    small, large = _kept_index_arrays(d, big, ndim)
    spectrum = np.fft.fftn(x.astype(np.float64), axes=tuple(range(1, ndim + 1)))
    spectrum = spectrum.reshape(len(x), -1)
    cropped = np.zeros((len(x), d**ndim), np.complex128)
    np.add.at(cropped, (slice(None), small), spectrum[:, large])
    cropped /= _alias_counts(d, ndim).ravel()
    cropped = cropped.reshape((len(x),) + (d,) * ndim)
    out = np.fft.ifftn(cropped, axes=tuple(range(1, ndim + 1))).real
    return out * (d / big) ** ndim


def _reference_pad(y: np.ndarray, big: int) -> np.ndarray:
    """Y(k mod d) at every kept wave number k of the D grid, times (D/d)^ndim (module notes)."""
    d, ndim = y.shape[-1], y.ndim - 1
    small, large = _kept_index_arrays(d, big, ndim)
    spectrum = np.fft.fftn(y.astype(np.float64), axes=tuple(range(1, ndim + 1)))
    spectrum = spectrum.reshape(len(y), -1)
    padded = np.zeros((len(y), big**ndim), np.complex128)
    padded[:, large] = spectrum[:, small]  # `large` has no repeated index
    padded = padded.reshape((len(y),) + (big,) * ndim)
    out = np.fft.ifftn(padded, axes=tuple(range(1, ndim + 1))).real
    return out * (big / d) ** ndim


def _relative(got, want) -> float:
    return float(np.linalg.norm(to_host(got) - want) / np.linalg.norm(want))


def test_fast_references_equal_the_direct_dft_reference():
    rng = np.random.default_rng(0)
    for big, d, ndim in [(12, 8, 2), (11, 6, 2), (9, 4, 3), (8, 5, 3)]:
        x = rng.standard_normal((2,) + (big,) * ndim)
        want = np.stack([_reference_crop(image, d) for image in x])
        np.testing.assert_allclose(_reference_crop_fast(x, d), want, atol=1e-12)
        # and the pad reference is the exact right inverse of the crop reference
        y = rng.standard_normal((2,) + (d,) * ndim)
        np.testing.assert_allclose(_reference_crop_fast(_reference_pad(y, big), d), y, atol=1e-12)


@pytest.mark.parametrize(("big", "d"), WHITE_2D)
def test_white_noise_float32_crop_matches_reference(xp, big, d):
    x = np.random.default_rng(big * 1000 + d).standard_normal((5, big, big)).astype(np.float32)
    got = fourier_crop(xp.asarray(x), d)
    assert got.dtype == xp.float32 and got.shape == (5, d, d)
    assert _relative(got, _reference_crop_fast(x, d)) <= 1e-5


@pytest.mark.parametrize(("big", "d"), WHITE_2D)
def test_white_noise_float32_pad_matches_reference(xp, big, d):
    y = np.random.default_rng(big * 1000 + d).standard_normal((5, d, d)).astype(np.float32)
    got = fourier_pad(xp.asarray(y), big)
    assert got.dtype == xp.float32 and got.shape == (5, big, big)
    assert _relative(got, _reference_pad(y, big)) <= 1e-5


@pytest.mark.parametrize(("big", "d"), [(32, 16), (32, 15), (31, 16), (27, 10)])
def test_white_noise_float32_volumes_match_reference(xp, big, d):
    rng = np.random.default_rng(big + d)
    x = rng.standard_normal((2, big, big, big)).astype(np.float32)
    assert _relative(fourier_crop_volume(xp.asarray(x), d), _reference_crop_fast(x, d)) <= 1e-5
    y = rng.standard_normal((2, d, d, d)).astype(np.float32)
    assert _relative(fourier_pad_volume(xp.asarray(y), big), _reference_pad(y, big)) <= 1e-5


@pytest.mark.parametrize("batch", [1, 3, 4, 7, 12])
def test_white_noise_crop_in_batches_equals_whole_stack(xp, batch):
    """Batch sizes that do (1, 4, 12) and do not (3, 7) divide the 12 images."""
    from cryoweave.engine import map_batches_with_oom_retry

    x = xp.asarray(np.random.default_rng(9).standard_normal((12, 64, 64)).astype(np.float32))
    whole = to_host(fourier_crop(x, 32))
    parts = [to_host(out) for _, _, out in
             map_batches_with_oom_retry(lambda a, b: fourier_crop(x[a:b], 32), 12, batch)]
    # cuFFT may pick another kernel for another batch count: rounding, not equality
    scale = np.abs(whole).max()
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=0, atol=1e-6 * scale)
