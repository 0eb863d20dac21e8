"""FFT wrappers, centring and frequency grids (conventions.md)."""

from __future__ import annotations

import numpy as np
import pytest

from cryoweave.engine import (
    fft,
    fft_frequencies,
    fft_wave_numbers,
    fftn,
    fftshift,
    frequency_grid,
    frequency_grid_rfft,
    ifft,
    ifftn,
    ifftshift,
    irfft,
    irfft2,
    irfftn,
    rfft,
    rfft2,
    rfftn,
    to_host,
)


@pytest.mark.parametrize("n", [4, 5])
def test_frequency_grid_values(xp, n):
    (fy,) = frequency_grid((n,), xp=xp)
    expected = {4: [0, 0.25, 0.5, -0.25], 5: [0, 0.2, 0.4, -0.4, -0.2]}[n]
    np.testing.assert_allclose(to_host(fy), expected)  # even n: Nyquist is +0.5
    assert fy.dtype == xp.float32


def _relion_fftw_wave_numbers(n: int) -> tuple[list[int], list[int]]:
    """RELION's FOR_ALL_ELEMENTS_IN_FFTW_TRANSFORM loop (src/fftw.h), written out: a half
    transform has XSIZE = n // 2 + 1 columns; row i has logical index ip = i < XSIZE ? i : i − n,
    column j has jp = j."""
    xsize = n // 2 + 1
    return [i if i < xsize else i - n for i in range(n)], list(range(xsize))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8, 9, 64, 65])
def test_wave_numbers_follow_relion_and_differ_from_fftfreq_only_at_nyquist(xp, n):
    rows, columns = _relion_fftw_wave_numbers(n)
    full, half = to_host(fft_wave_numbers(n, xp)), to_host(fft_wave_numbers(n, xp, rfft=True))
    assert full.tolist() == rows and half.tolist() == columns
    np.testing.assert_array_equal(half / n, np.fft.rfftfreq(n))
    numpy_full = np.fft.fftfreq(n) * n
    differs = np.flatnonzero(~np.isclose(full, numpy_full))
    if n % 2 == 0:
        assert differs.tolist() == [n // 2]  # +n/2 here (RELION), −n/2 in numpy
        assert full[n // 2] == n // 2 and numpy_full[n // 2] == -(n // 2)
    else:
        assert differs.size == 0


def test_frequencies_are_wave_numbers_over_n_in_the_requested_dtype(xp):
    f = fft_frequencies(6, xp, dtype=xp.float32)
    assert f.dtype == xp.float32
    np.testing.assert_array_equal(to_host(f), np.float32([0, 1, 2, 3, -2, -1]) / np.float32(6))
    half = to_host(fft_frequencies(6, xp, rfft=True))
    np.testing.assert_array_equal(half, [0, 1 / 6, 2 / 6, 0.5])
    assert fft_wave_numbers(4, xp, dtype=int).dtype.kind == "i"


def test_frequency_grids_are_sparse_and_broadcast(xp):
    fz, fy, fx = frequency_grid((3, 4, 6), xp=xp, dtype=xp.float64)
    assert (fz.shape, fy.shape, fx.shape) == ((3, 1, 1), (1, 4, 1), (1, 1, 6))
    fy, fx = frequency_grid_rfft((5, 6), xp=xp)
    assert (fy.shape, fx.shape) == ((5, 1), (1, 4))
    np.testing.assert_allclose(to_host(fx).ravel(), [0, 1 / 6, 2 / 6, 0.5])
    np.testing.assert_allclose(to_host(fy).ravel(), [0, 0.2, 0.4, -0.4, -0.2])


def test_frequency_grid_locates_a_plane_wave(xp):
    """A wave with 3 cycles along x and −2 along y over 16 × 10 pixels peaks at those
    frequencies of the half-complex grid."""
    y, x = np.mgrid[0:16, 0:10]
    image = xp.asarray(np.cos(2 * np.pi * (3 * x / 10 - 2 * y / 16)), dtype=xp.float32)
    spectrum = to_host(abs(rfft2(image)))
    iy, ix = np.unravel_index(np.argmax(spectrum), spectrum.shape)
    fy, fx = frequency_grid_rfft(image.shape, xp=np)
    assert (fy[iy, 0], fx[0, ix]) == (pytest.approx(-2 / 16), pytest.approx(3 / 10))


def test_frequency_grid_rejects_bad_shapes():
    with pytest.raises(ValueError, match="positive sizes"):
        frequency_grid((4, 0))


@pytest.mark.parametrize("n", [6, 7])
def test_shift_puts_origin_at_index_n_over_2(xp, n):
    delta = xp.zeros((n, n), dtype=xp.float32)
    delta[0, 0] = 1
    centred = fftshift(delta)
    assert to_host(centred)[n // 2, n // 2] == 1
    np.testing.assert_array_equal(to_host(ifftshift(centred)), to_host(delta))
    # a centred, point-symmetric image has a real spectrum once the centre is moved to 0
    assert float(abs(to_host(fftn(ifftshift(centred), ndim=2)).imag).max()) == 0.0


def test_shift_along_chosen_axes(xp):
    stack = xp.asarray(np.arange(2 * 3 * 4).reshape(2, 3, 4))
    np.testing.assert_array_equal(
        to_host(fftshift(stack, axes=(-1,))), np.fft.fftshift(np.arange(24).reshape(2, 3, 4), -1)
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_wrappers_match_numpy_and_keep_precision(xp, dtype):
    rng = np.random.default_rng(0)
    images = rng.standard_normal((2, 6, 7)).astype(dtype)
    volume = rng.standard_normal((5, 6, 7)).astype(dtype)
    complex_dtype = np.complex64 if dtype == np.float32 else np.complex128
    tol = 1e-5 if dtype == np.float32 else 1e-12
    spectrum = rfft2(xp.asarray(images))
    assert spectrum.dtype == complex_dtype and spectrum.shape == (2, 6, 4)
    np.testing.assert_allclose(to_host(spectrum), np.fft.rfft2(images), atol=tol)
    np.testing.assert_allclose(to_host(irfft2(spectrum, (6, 7))), images, atol=tol)
    spectrum3 = rfftn(xp.asarray(volume))
    np.testing.assert_allclose(to_host(spectrum3), np.fft.rfftn(volume), atol=tol * 10)
    np.testing.assert_allclose(to_host(irfftn(spectrum3, (5, 6, 7))), volume, atol=tol)
    full = fftn(xp.asarray(volume), ndim=3, norm="ortho")
    np.testing.assert_allclose(to_host(full), np.fft.fftn(volume, norm="ortho"), atol=tol)
    np.testing.assert_allclose(to_host(ifftn(full, ndim=3, norm="ortho")).real, volume, atol=tol)


def test_one_dimensional_wrappers(xp):
    rows = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    half = rfft(xp.asarray(rows), norm="forward", workers=1)
    np.testing.assert_allclose(to_host(half), np.fft.rfft(rows, norm="forward"), atol=1e-6)
    np.testing.assert_allclose(to_host(irfft(half, 8, norm="forward")), rows, atol=1e-6)
    columns = fft(xp.asarray(rows), axis=0)
    np.testing.assert_allclose(to_host(columns), np.fft.fft(rows, axis=0), atol=1e-5)
    np.testing.assert_allclose(to_host(ifft(columns, axis=0)).real, rows, atol=1e-6)


# ------------------------------------------- c2r of non-Hermitian input (white noise, float32)


def _reference_c2r(spectrum: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """FFTW's c2r meaning, slowly in float64: inverse over the leading axes (cropped or
    zero-padded to `shape`), then along the last axis a direct sum that uses only the real parts
    of the index-0 and (even n) n/2 terms."""
    n = shape[-1]
    x = spectrum.astype(np.complex128)
    lead = tuple(range(-len(shape), -1))
    if lead:
        x = np.fft.ifftn(x, s=shape[:-1], axes=lead)
    half = np.zeros((*x.shape[:-1], n // 2 + 1), np.complex128)
    m = min(x.shape[-1], n // 2 + 1)
    half[..., :m] = x[..., :m]
    j = np.arange(n)
    out = half[..., 0].real[..., None] * np.ones(n)
    for k in range(1, (n + 1) // 2):
        out = out + 2 * np.real(half[..., k][..., None] * np.exp(2j * np.pi * j * k / n))
    if n % 2 == 0:
        out = out + half[..., n // 2].real[..., None] * (-1.0) ** j
    return out / n


def _white_spectrum(shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def _relative_error(got, want) -> float:
    return float(np.linalg.norm(to_host(got) - want) / np.linalg.norm(want))


@pytest.mark.parametrize("n", [128, 127, 100, 64, 8, 7])
@pytest.mark.parametrize("length", ["exact", "short", "long"])
def test_irfft_of_non_hermitian_input_drops_imaginary_dc_and_nyquist(xp, n, length):
    # cuFFT may read those imaginary parts (the likely cause of the CuPy fourier_crop fault)
    m = {"exact": n // 2 + 1, "short": n // 2, "long": n // 2 + 3}[length]
    spectrum = _white_spectrum((5, m), n)
    got = irfft(xp.asarray(spectrum), n, norm="forward")
    assert got.dtype == xp.float32 and got.shape == (5, n)
    want = _reference_c2r(spectrum, (n,)) * n
    assert _relative_error(got, want) <= 1e-5


@pytest.mark.parametrize("shape", [(128, 128), (12, 9), (9, 12), (6, 8, 10), (7, 5, 4)])
def test_irfftn_of_non_hermitian_input_matches_fftw_meaning(xp, shape):
    spectrum = _white_spectrum((3, *shape[:-1], shape[-1] // 2 + 1), sum(shape))
    got = irfftn(xp.asarray(spectrum), shape)
    assert got.dtype == xp.float32 and got.shape == (3, *shape)
    want = _reference_c2r(spectrum, shape)
    assert _relative_error(got, want) <= 1e-5
    if len(shape) == 2:
        assert _relative_error(irfft2(xp.asarray(spectrum), shape), want) <= 1e-5


def test_irfftn_crops_and_pads_leading_axes_like_numpy(xp):
    spectrum = _white_spectrum((2, 10, 7, 5), 3)
    got = irfftn(xp.asarray(spectrum), (8, 9, 8))
    want = _reference_c2r(spectrum, (8, 9, 8))
    assert _relative_error(got, want) <= 1e-5


@pytest.mark.parametrize(("shape", "n"), [((4, 65), 128), ((6, 9, 5), 8), ((5, 6, 4), 7)])
def test_hermitian_c2r_input_makes_the_self_conjugate_terms_real(xp, shape, n):
    from cryoweave.engine._fft import _hermitian_c2r_input

    spectrum = _white_spectrum(shape, n)
    lead_shape = shape[1:-1]
    axes = tuple(range(-len(lead_shape) - 1, 0))
    fixed = to_host(_hermitian_c2r_input(xp.asarray(spectrum), n, axes, lead_shape))
    lead = axes[:-1]
    mixed = np.fft.ifftn(fixed.astype(np.complex128), axes=lead) if lead else fixed
    for column in [0] + ([n // 2] if n % 2 == 0 else []):
        real_part = np.abs(mixed[..., column].real).max()
        assert np.abs(mixed[..., column].imag).max() <= 1e-6 * real_part
    untouched = [c for c in range(shape[-1]) if c not in (0, n // 2)]
    np.testing.assert_array_equal(fixed[..., untouched], spectrum[..., untouched])
    # what pocketfft computes is unchanged by the projection
    np.testing.assert_allclose(
        np.fft.irfftn(fixed, s=(*lead_shape, n), axes=axes),
        np.fft.irfftn(spectrum, s=(*lead_shape, n), axes=axes), rtol=0, atol=1e-6)


def _c2r_reading_imaginary_parts(spectrum: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A c2r that, like some cuFFT kernels on non-Hermitian input, also uses the imaginary
    parts of the index-0 and n/2 terms (here: as sine waves) instead of ignoring them."""
    n = shape[-1]
    lead = tuple(range(-len(shape), -1))
    mixed = np.fft.ifftn(spectrum, s=shape[:-1], axes=lead) if lead else spectrum
    out = np.fft.irfftn(spectrum, s=shape, axes=(*lead, -1))
    j = np.arange(n)
    out = out + mixed[..., 0].imag[..., None] * np.sin(2 * np.pi * j / n + 0.3) / n
    if n % 2 == 0:
        out = out + mixed[..., n // 2].imag[..., None] * np.sin(np.pi * j / 2 + 0.3) / n
    return out


@pytest.mark.parametrize("shape", [(128,), (100,), (7,), (128, 128), (12, 9), (6, 8, 10)])
def test_hermitian_c2r_input_makes_such_a_c2r_agree_with_fftw(xp, shape):
    """The CuPy fault of `fourier_crop` 256² -> 128, emulated on any backend: a c2r that reads
    the imaginary parts is 6 % off on white noise, and exact on the wrapper's Hermitian input."""
    from cryoweave.engine._fft import _hermitian_c2r_input

    spectrum = _white_spectrum((4, *shape[:-1], shape[-1] // 2 + 1), 11).astype(np.complex128)
    want = _reference_c2r(spectrum, shape)
    assert _relative_error(_c2r_reading_imaginary_parts(spectrum, shape), want) > 1e-2
    fixed = to_host(_hermitian_c2r_input(xp.asarray(spectrum), shape[-1],
                                         tuple(range(-len(shape), 0)), shape[:-1]))
    assert _relative_error(_c2r_reading_imaginary_parts(fixed, shape), want) <= 1e-12


def test_hermitian_c2r_input_crops_and_pads_the_leading_axes_like_numpy(xp):
    from cryoweave.engine._fft import _hermitian_c2r_input

    spectrum = _white_spectrum((2, 10, 7, 5), 5).astype(np.complex128)  # to (8, 9, 8)
    fixed = to_host(_hermitian_c2r_input(xp.asarray(spectrum), 8, (-3, -2, -1), (8, 9)))
    assert fixed.shape == (2, 8, 9, 5)
    want = _reference_c2r(spectrum, (8, 9, 8))
    assert _relative_error(_c2r_reading_imaginary_parts(fixed, (8, 9, 8)), want) <= 1e-12


# ------------------------------------------- NumPy: SciPy's compiled pocketfft, called directly


def _ours_and_scipys(x: np.ndarray, norm: str, wrapper: str) -> tuple[np.ndarray, np.ndarray]:
    """(engine wrapper, the scipy.fft call it stands for) of `wrapper` on x."""
    import scipy.fft as s

    c = x + 1j * x[::-1]  # complex, same precision
    pairs = {
        "rfft": lambda: (rfft(x, axis=1, norm=norm, workers=2),
                         s.rfft(x, axis=1, norm=norm, workers=2)),
        "irfft crop": lambda: (irfft(c, 6, axis=0, norm=norm), s.irfft(c, 6, axis=0, norm=norm)),
        "irfft pad": lambda: (irfft(c, 23, norm=norm), s.irfft(c, 23, norm=norm)),
        "irfft real input": lambda: (irfft(x, 12, norm=norm), s.irfft(x, 12, norm=norm)),
        "fft": lambda: (fft(x, axis=-2, norm=norm), s.fft(x, axis=-2, norm=norm)),
        "ifft": lambda: (ifft(c, norm=norm), s.ifft(c, norm=norm)),
        "rfftn": lambda: (rfftn(x, ndim=3, norm=norm),
                          s.rfftn(x, axes=(-3, -2, -1), norm=norm)),
        "irfftn": lambda: (irfftn(c, (5, 8), norm=norm),
                           s.irfftn(c, s=(5, 8), axes=(-2, -1), norm=norm)),
        "fftn": lambda: (fftn(x, ndim=2, norm=norm), s.fftn(x, axes=(-2, -1), norm=norm)),
        "ifftn": lambda: (ifftn(c, ndim=3, norm=norm),
                          s.ifftn(c, axes=(-3, -2, -1), norm=norm)),
        "strided": lambda: (rfft(x[:, ::2, 1:], norm=norm), s.rfft(x[:, ::2, 1:], norm=norm)),
    }
    return pairs[wrapper]()


@pytest.mark.parametrize("wrapper", ["rfft", "irfft crop", "irfft pad", "irfft real input",
                                     "fft", "ifft", "rfftn", "irfftn", "fftn", "ifftn",
                                     "strided"])
@pytest.mark.parametrize("norm", ["backward", "ortho", "forward"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_transforms_are_scipy_fft_bit_for_bit(wrapper, norm, dtype):
    """The engine calls SciPy's compiled pocketfft itself, as scipy.fft would: white noise with
    odd and even axes gives identical values, dtypes and shapes."""
    x = np.random.default_rng(17).standard_normal((7, 9, 12)).astype(dtype)
    ours, scipys = _ours_and_scipys(x, norm, wrapper)
    assert ours.dtype == scipys.dtype
    np.testing.assert_array_equal(ours, scipys)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_transforms_do_not_depend_on_threads_or_batch(dtype):
    """The same image gives the same bits whatever the thread count and whatever else is in
    the call: a step's FFT threads follow the runtime's budget (fewer while other steps run), a
    resumed or retried step may run alone, and batch sizes follow memory; outputs must not
    change with them. (ducc0 0.42, measured as a faster backend, fails this at float
    rounding: its results change with nthreads and with the number of transforms per call.)"""
    rng = np.random.default_rng(11)
    images = rng.standard_normal((40, 64, 64)).astype(dtype)
    volume = rng.standard_normal((2, 24, 24, 24)).astype(dtype)
    one = rfftn(images, ndim=2, workers=1)
    for workers in (2, 3):
        np.testing.assert_array_equal(rfftn(images, ndim=2, workers=workers), one)
    for batch in (1, 3, 7):
        np.testing.assert_array_equal(rfftn(images[:batch], ndim=2, workers=1), one[:batch])
    column = fft(one, axis=-2, workers=1)
    np.testing.assert_array_equal(fft(one[:3], axis=-2, workers=2), column[:3])
    back = irfftn(one, (64, 64), workers=1)
    np.testing.assert_array_equal(irfftn(one[5:6], (64, 64), workers=2), back[5:6])
    spectrum = rfftn(volume, ndim=3, workers=1)
    np.testing.assert_array_equal(rfftn(volume[1:], ndim=3, workers=2), spectrum[1:])
    np.testing.assert_array_equal(irfftn(spectrum, (24, 24, 24), workers=2),
                                  irfftn(spectrum, (24, 24, 24), workers=1))


def test_numpy_inputs_off_the_direct_path_go_to_scipy_fft():
    import scipy.fft

    whole = np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(rfft(whole), scipy.fft.rfft(whole))  # integers: float64
    half = np.ones(8, np.float16)
    assert rfft(half).dtype == scipy.fft.rfft(half).dtype == np.complex64
    swapped = np.arange(8, dtype=">f4")
    np.testing.assert_array_equal(rfft(swapped), scipy.fft.rfft(swapped))
    with pytest.raises(ValueError, match="norm"):
        fft(np.ones(4, np.complex64), norm="sideways")
    with pytest.raises(ValueError, match="workers"):
        fft(np.ones(4, np.complex64), workers=0)
    with pytest.raises(ValueError, match="axes"):
        rfftn(np.ones((2, 4), np.float32), ndim=3)
    with pytest.raises(TypeError, match="real"):
        rfft(np.ones(4, np.complex64))


def test_fourier_crop_loads_the_compiled_pocketfft_without_scipy_fft():
    """The reason for the direct calls: `import scipy.fft` costs every command ~0.2 s of
    start-up (`import scipy` alone ~50 ms: the module is found without it). A later
    `import scipy.fft` uses the same compiled module."""
    import subprocess
    import sys

    code = ("import sys, numpy as np; from cryoweave.engine import fourier_crop; "
            "fourier_crop(np.ones((2, 16, 16), np.float32), 8); "
            "print('scipy' in sys.modules or 'scipy.fft' in sys.modules); "
            "module = sys.modules['scipy.fft._pocketfft.pypocketfft']; "
            "import scipy.fft, scipy.fft._pocketfft.basic as basic; print(basic.pfft is module)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "True"]


def test_threads_that_need_the_compiled_pocketfft_first_at_once_load_it_once():
    import subprocess
    import sys

    code = """
import threading, numpy as np
from cryoweave.engine import fourier_crop
from cryoweave.engine import _fft
loads = []
real_load = _fft._load_compiled_pocketfft
def counted():
    if _fft._POCKETFFT not in __import__("sys").modules:
        loads.append(1)
    return real_load()
_fft._load_compiled_pocketfft = counted
images = np.random.default_rng(0).standard_normal((8, 32, 32)).astype(np.float32)
barrier, results = threading.Barrier(8), [None] * 8
def work(i):
    barrier.wait()
    results[i] = fourier_crop(images, 16, workers=1)
threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
[t.start() for t in threads]; [t.join() for t in threads]
print(len(loads), all(np.array_equal(r, results[0]) for r in results))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["1", "True"]
