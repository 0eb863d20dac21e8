"""Fourier cropping (downsampling) and Fourier padding (upsampling), RELION convention.

Cropping a square image of box D to box d (d ≤ D) keeps, of the half-complex spectrum
`rfft2(image)` (rows = y frequencies, columns = x frequencies 0 … D // 2):

- columns `[0 : d // 2 + 1]`,
- rows `[0 : d // 2 + 1] ∪ [D − (d − d // 2 − 1) : D]`, i.e. for even d
  `[0 : d/2 + 1] ∪ [D − d/2 + 1 : D]` (wave numbers −d/2 + 1 … +d/2: the *positive* Nyquist row
  is kept), for odd d `[0 : (d + 1)/2] ∪ [D − (d − 1)/2 : D]` (−(d − 1)/2 … (d − 1)/2),

then inverse-transforms that half-complex array as a d × d real image (c2r) and scales by
(d/D)² so pixel values, hence the mean, are preserved. Volumes do the same on z and y. This is
RELION's `resizeMap` (`windowFourierTransform` + FFTW c2r), which `relion_image_handler
--rescale_angpix` runs; float32 results agree with it to < 3e-7 relative (tests). Odd D is
supported; RELION itself only produces even d.

Nyquist (even d), what the c2r does with the cropped half spectrum. Writing F(ky, kx) for the
input spectrum at signed wave numbers:

- Nyquist row (ky = d/2): F(+d/2, kx) for kx ≥ 0 and, by Hermitian symmetry, F(−d/2, kx) for
  kx < 0 — so the kept set is the Hermitian closure of the half-plane window.
- Nyquist column (kx = d/2) and the point (d/2, 0): these are self-aliased on the d grid, and the
  c2r takes the real (Hermitian) part, i.e. the *average* of the two input frequencies that alias
  there: (F(ky, d/2) + F(ky, −d/2))/2, and (F(d/2, 0) + F(−d/2, 0))/2.

Equivalently: the output spectrum at each d-grid point is the mean of F over the kept wave
numbers that alias to it. This equals "crop the full complex spectrum, inverse FFT, take the real
part" when the Nyquist row is taken from +d/2 for kx ≥ 0 and from −d/2 for kx < 0; it does NOT
equal that recipe with the +d/2 row for every kx (which averages F(±d/2, kx) along the whole
Nyquist row). With the Nyquist row and column masked all these variants agree (recovar, ASPIRE);
cryoDRGN omits the (d/D)² factor, so its images are (D/d)² larger.

`fourier_pad` is the matching zero-padding: it puts y's spectrum value Y(k mod d) at every
wave number k of that same kept set (the window rows/columns of an empty D-box half spectrum,
plus for even d the −d/2 terms of the kx = 0 plane that Hermitian symmetry requires) and scales
by (D/d)². So crop ∘ pad = identity exactly; for even d the terms the crop averages appear at
both ±d/2 at full weight, which makes pad the adjoint of crop only up to those terms (see
`fourier_crop`). RELION pads differently (it also masks the padded spectrum to a disc of radius
d/2, so its crop ∘ pad is not the identity).

Backends: the cropped half spectrum handed to the final c2r is not Hermitian (for even d its
Nyquist column, and the kx = 0 column through the unpaired +d/2 row, are complex after the
inverse along y/z); "the c2r takes the real part" above is FFTW's/pocketfft's c2r meaning. cuFFT
leaves a non-Hermitian C2R undefined and some of its kernels read those imaginary parts: CuPy
256² → 128 float32 was 6.3 % off, which is √(1/256), the share of the Nyquist column's imaginary
part in a white-noise image of 128² (inferred from that figure; not yet re-measured on a GPU).
The `irfft`/`irfftn` wrappers (`_fft.py`) therefore make the c2r input Hermitian on CuPy, so
both backends compute the module's definition; the same holds for `fourier_pad`.

The 2-D and 3-D kernels use a pruned transform: rfft along x keeping only the d // 2 + 1 needed
columns, then the complex FFT along y (and z) on those columns only, cropping each axis before
transforming the next; the inverse runs the same way on the small box. The output equals the
full rfft2 + crop (to float rounding) at ~30% less work.
"""

from __future__ import annotations

import numbers
from typing import Any

from ._backend import array_namespace
from ._fft import fft, ifft, irfft, irfftn, rfft, rfftn


def _kept_counts(d: int) -> tuple[int, int]:
    """(non-negative, negative) wave numbers kept along a full axis for a d-point output."""
    n_nonnegative = d // 2 + 1
    return n_nonnegative, d - n_nonnegative


def _take_axis(x: Any, axis: int, part: slice) -> Any:
    return x[(Ellipsis, part) + (slice(None),) * (-axis - 1)]


def _crop_axis(spectrum: Any, d: int, axis: int) -> Any:
    """Keep the d wave numbers of the RELION window along full FFT axis `axis`."""
    xp = array_namespace(spectrum)
    big = spectrum.shape[axis]
    n_pos, n_neg = _kept_counts(d)
    parts = [_take_axis(spectrum, axis, slice(0, n_pos))]
    if n_neg:
        parts.append(_take_axis(spectrum, axis, slice(big - n_neg, big)))
    return xp.concatenate(parts, axis=axis)


def _pad_axis(spectrum: Any, big: int, axis: int) -> Any:
    """Place the d wave numbers along full FFT axis `axis` into an empty axis of length `big`."""
    xp = array_namespace(spectrum)
    d = spectrum.shape[axis]
    n_pos, n_neg = _kept_counts(d)
    shape = list(spectrum.shape)
    shape[axis] = big
    out = xp.zeros(tuple(shape), dtype=spectrum.dtype)
    out[(Ellipsis, slice(0, n_pos)) + (slice(None),) * (-axis - 1)] = _take_axis(
        spectrum, axis, slice(0, n_pos)
    )
    if n_neg:
        out[(Ellipsis, slice(big - n_neg, big)) + (slice(None),) * (-axis - 1)] = _take_axis(
            spectrum, axis, slice(n_pos, d)
        )
    return out


def _validated(x: Any, box_px: Any, ndim: int, grow: bool, name: str) -> tuple[Any, int, int]:
    """Check shapes and the target box; return (x as float32/float64, input box, target box)."""
    xp = array_namespace(x)
    what = "images (..., y, x)" if ndim == 2 else "volumes (..., z, y, x)"
    if x.ndim < ndim:
        raise ValueError(f"{name} expects {what}; got an array of shape {tuple(x.shape)}")
    trailing = tuple(int(n) for n in x.shape[-ndim:])
    if len(set(trailing)) != 1:
        box = "×".join(str(n) for n in trailing)
        raise ValueError(
            f"{name} needs square/cubic boxes; got {box}. Window or pad them to a square box first"
        )
    if isinstance(box_px, bool) or not isinstance(box_px, numbers.Integral):
        raise ValueError(f"box_px={box_px!r} must be an integer number of pixels")
    box_in, box_out = trailing[0], int(box_px)
    if box_out < 1:
        raise ValueError(f"box_px={box_out} must be a positive number of pixels")
    if not grow and box_out > box_in:
        raise ValueError(
            f"box_px={box_out} exceeds the input box {box_in}; choose box_px ≤ {box_in} "
            "(fourier_pad enlarges)"
        )
    if grow and box_out < box_in:
        raise ValueError(
            f"box_px={box_out} is smaller than the input box {box_in}; choose box_px ≥ {box_in} "
            "(fourier_crop shrinks)"
        )
    if xp.iscomplexobj(x):
        raise ValueError(f"{name} expects real images; got dtype {x.dtype}")
    if x.dtype != xp.float64:
        x = x.astype(xp.float32, copy=False)
    return x, box_in, box_out


def _crop_pruned(x: Any, d: int, ndim: int, workers: int | None) -> Any:
    # norm="forward" on both ways: the forward divides by D per axis and the inverse does not,
    # which folds the (d/D)**ndim factor into the transforms.
    spectrum = rfft(x, axis=-1, norm="forward", workers=workers)[..., : d // 2 + 1]
    for axis in range(-2, -ndim - 1, -1):
        spectrum = fft(spectrum, axis=axis, norm="forward", workers=workers)
        spectrum = _crop_axis(spectrum, d, axis)
    for axis in range(-ndim, -1):
        spectrum = ifft(spectrum, axis=axis, norm="forward", workers=workers)
    return irfft(spectrum, d, axis=-1, norm="forward", workers=workers)


def _window_mask(xp: Any, d: int, big: int) -> Any:
    n_pos, n_neg = _kept_counts(d)
    index = xp.arange(big)
    return (index < n_pos) | (index >= big - n_neg)


def _complete_zero_plane(spectrum: Any, d: int, ndim: int) -> Any:
    """Hermitian completion of the kx = 0 plane of a padded half spectrum (even d).

    The window holds ky = +d/2 but not −d/2; the crop's c2r averages the two, so the padded
    spectrum needs F(−k) = conj F(k) there too, else crop(pad y) loses half of y's (d/2, 0) term.
    """
    xp = array_namespace(spectrum)
    big = spectrum.shape[-2]
    axes = tuple(range(-(ndim - 1), 0))
    plane = spectrum[..., 0]
    negated = xp.conj(xp.roll(xp.flip(plane, axis=axes), 1, axis=axes))  # value at −k
    inside = _window_mask(xp, d, big)
    for _ in range(ndim - 2):
        inside = inside[:, None] & _window_mask(xp, d, big)
    spectrum[..., 0] = xp.where(inside, plane, negated)
    return spectrum


def _pad_pruned(x: Any, big: int, ndim: int, workers: int | None) -> Any:
    d = x.shape[-1]
    spectrum = rfft(x, axis=-1, norm="forward", workers=workers)
    for axis in range(-2, -ndim - 1, -1):
        spectrum = fft(spectrum, axis=axis, norm="forward", workers=workers)
    for axis in range(-2, -ndim - 1, -1):
        spectrum = _pad_axis(spectrum, big, axis)
    if d % 2 == 0:
        spectrum = _complete_zero_plane(spectrum, d, ndim)
    for axis in range(-ndim, -1):
        spectrum = ifft(spectrum, axis=axis, norm="forward", workers=workers)
    # irfft zero-pads the d // 2 + 1 columns to big // 2 + 1.
    return irfft(spectrum, big, axis=-1, norm="forward", workers=workers)


def _crop_full(x: Any, d: int, ndim: int, workers: int | None = None) -> Any:
    """Straightforward path (full rfftn, crop, irfftn); same output as the pruned one."""
    big = x.shape[-1]
    spectrum = rfftn(x, ndim=ndim, workers=workers)[..., : d // 2 + 1]
    for axis in range(-2, -ndim - 1, -1):
        spectrum = _crop_axis(spectrum, d, axis)
    out = irfftn(spectrum, (d,) * ndim, workers=workers)
    out *= out.dtype.type((d / big) ** ndim)
    return out


def _resample(x: Any, box_px: Any, ndim: int, grow: bool, name: str, workers: int | None) -> Any:
    x, box_in, box_out = _validated(x, box_px, ndim, grow, name)
    if box_out == box_in:
        return x.copy()
    if grow:
        return _pad_pruned(x, box_out, ndim, workers)
    return _crop_pruned(x, box_out, ndim, workers)


def fourier_crop(images: Any, box_px: int, *, workers: int | None = None) -> Any:
    """Downsample square images by Fourier cropping (RELION convention, see module notes).

    images: `(..., D, D)` float32 (float64 stays float64; other real dtypes become float32),
        NumPy or CuPy; the output is on the same backend.
    box_px: target box d, 1 ≤ d ≤ D, even or odd. The new pixel size is exactly old · D / d.
    workers: SciPy FFT threads (NumPy input only; default `fft_workers()`).
    Returns `(..., d, d)` of the input's float dtype; pixel values (the mean) are preserved.

    Relations (scalars k = d/D): mean(crop x) = mean(x); crop(pad y) = y; for x band-limited
    below d/2 cycles/box, ‖crop x‖² = k² ‖x‖² (and crop x is x decimated when D/d is an integer).
    Adjoint: ⟨crop x, y⟩ = k² ⟨x, pad(M y)⟩, where M divides each d-grid frequency of y by the
    number of input frequencies the crop averages there: the identity for odd d; for even d it
    halves the Nyquist column (kx = d/2) and the (ky, kx) = (d/2, 0) term.
    Raises ValueError for non-square images, d > D or d < 1.
    """
    return _resample(images, box_px, 2, False, "fourier_crop", workers)


def fourier_pad(images: Any, box_px: int, *, workers: int | None = None) -> Any:
    """Upsample square images by zero-padding their spectrum (inverse of `fourier_crop`).

    images: `(..., d, d)` float32/float64, NumPy or CuPy. box_px: target box D ≥ d.
    Returns `(..., D, D)`, pixel values (the mean) preserved (scale (D/d)²); fourier_crop(·, d)
    recovers the input exactly. Nyquist-free input is interpolated (band-limited, sinc); for even
    d the Nyquist column and (d/2, 0) terms go to both ±d/2 at full weight (module notes).
    Raises ValueError for non-square images or D < d.
    """
    return _resample(images, box_px, 2, True, "fourier_pad", workers)


def fourier_crop_volume(volume: Any, box_px: int, *, workers: int | None = None) -> Any:
    """Fourier-crop cubic volumes `(..., D, D, D)` -> `(..., d, d, d)`, scale (d/D)³.

    Same window on z, y (full FFT axes) and x (half-complex) as `fourier_crop`, RELION's
    `resizeMap` for 3-D; dtype rules, backend, errors and relations as there with k³ in place
    of k² (M then also halves the other self-aliased Nyquist terms of the d³ grid).
    """
    return _resample(volume, box_px, 3, False, "fourier_crop_volume", workers)


def fourier_pad_volume(volume: Any, box_px: int, *, workers: int | None = None) -> Any:
    """Zero-pad the spectrum of cubic volumes `(..., d, d, d)` -> `(..., D, D, D)`, scale (D/d)³.

    fourier_crop_volume(·, d) recovers the input; dtype rules, backend and errors as
    `fourier_pad`.
    """
    return _resample(volume, box_px, 3, True, "fourier_pad_volume", workers)


def fourier_crop_working_bytes(
    box_px_in: int, box_px_out: int, *, ndim: int = 2, itemsize: int = 4
) -> int:
    """Upper bound of the working memory (bytes) of `fourier_crop` per image (or volume).

    Sums the input, every intermediate spectrum and the output of the pruned transform for
    real `itemsize` 4 (float32; 8 for float64), as if all were alive at once. Use it with
    `batch_size_for`; FFT plan work areas (cuFFT) come on top, so leave headroom in the budget.
    """
    big, small = int(box_px_in), int(box_px_out)
    complex_size = 2 * itemsize
    columns = small // 2 + 1
    total = (big**ndim + small**ndim) * itemsize
    total += big ** (ndim - 1) * (big // 2 + 1) * complex_size  # rfft along x
    for j in range(ndim - 1):  # FFT along one more axis, then its cropped copy
        total += small**j * big ** (ndim - 1 - j) * columns * complex_size
        total += small ** (j + 1) * big ** (ndim - 2 - j) * columns * complex_size
    total += (ndim - 1) * small ** (ndim - 1) * columns * complex_size  # inverse FFTs
    return total
