"""Micrograph preprocessing kernels (Xmipp "preprocess micrographs"), batched, NumPy or CuPy.

Every kernel takes `images: (n, y, x)` or one `(y, x)` micrograph (odd, even, non-square),
float32 (float64 stays float64, other real dtypes become float32) and returns a new array of the
same backend and float dtype; inputs are never modified. The maths of each operation is in the
spec (preprocess_micrographs.md); digital frequency |w| = sqrt((kx/X)² + (ky/Y)²), Nyquist 0.5.

Fourier operations work on the rfft2 half spectrum with `norm="forward"` both ways (the forward
divides by Y·X, the inverse does not), so cropping the spectrum keeps the mean. Downsampling uses
the pruned transform of `fourier_crop` (rfft along x, crop columns, FFT along y on the kept
columns only, crop rows, inverse on the small grid) with the same RELION window for odd/even
sizes, here on each axis separately (non-square allowed).

`preprocess_micrographs` runs the enabled operations in the fixed order crop → log → bad pixels →
invert → downsample → denoise → gaussian → high-pass → low-pass → normalize. Consecutive Fourier
operations share one forward and one inverse FFT: their transfer functions (real, even in
frequency) are multiplied on the cropped half spectrum, which equals applying them one by one
(tests). A sign flip right before such a group is folded into its transfer function.

(One module for the kernels and their fused chain: the chain reuses the private in-place forms.)
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

from ._backend import array_namespace
from ._badpixels import bad_pixel_mask, mean_std, replace_bad_pixels_inplace
from ._denoise import check_iterations, denoise_tv_inplace
from ._fft import fft, frequency_grid_rfft, ifft, irfft, irfft2, rfft, rfft2

MIN_OUTPUT_PX = 4  # smallest output side accepted by downsampling and cropping


# ------------------------------------------------------------------------------ array handling


def _as_batch(images: Any, name: str) -> tuple[Any, bool]:
    """(images as (n, y, x) real float array, whether the input was a single (y, x) image)."""
    xp = array_namespace(images)
    if images.ndim not in (2, 3):
        raise ValueError(
            f"{name} expects micrographs (n, y, x) or one (y, x); got shape {tuple(images.shape)}"
        )
    if xp.iscomplexobj(images):
        raise ValueError(f"{name} expects real micrographs; got dtype {images.dtype}")
    if images.dtype != xp.float64:
        images = images.astype(xp.float32, copy=False)
    single = images.ndim == 2
    return (images[None] if single else images), single


def _unbatch(images: Any, single: bool) -> Any:
    return images[0] if single else images


def _empty_like(images: Any) -> Any:
    """A new C-contiguous array of the shape and dtype of `images`."""
    return array_namespace(images).empty(images.shape, images.dtype)


def _private(images: Any, source: Any) -> Any:
    """`images` as a C-contiguous array that does not share memory with the caller's `source`."""
    xp = array_namespace(images)
    if images is source or images.base is not None or not images.flags.c_contiguous:
        return xp.array(images, copy=True, order="C")
    return images


# --------------------------------------------------------------------------- real-space ops


def _check_crop(shape: tuple[int, ...], crop_px: int) -> None:
    if isinstance(crop_px, bool) or not isinstance(crop_px, int) or crop_px < 0:
        raise ValueError(f"crop_px={crop_px!r} must be a non-negative integer number of pixels")
    height, width = shape[-2:]
    if min(height, width) - 2 * crop_px < MIN_OUTPUT_PX:
        raise ValueError(
            f"crop_px={crop_px} leaves less than {MIN_OUTPUT_PX} pixels of a {width}×{height} "
            f"micrograph; choose crop_px ≤ {(min(height, width) - MIN_OUTPUT_PX) // 2}"
        )


def crop_border(images: Any, crop_px: int) -> Any:
    """Remove `crop_px` pixels from every border: (n, Y, X) -> (n, Y − 2c, X − 2c).

    No resampling; the pixel size is unchanged.
    """
    batch, single = _as_batch(images, "crop_border")
    _check_crop(batch.shape, crop_px)
    return _private(_unbatch(_crop_view(batch, crop_px), single), images)


def _crop_view(batch: Any, crop_px: int) -> Any:
    if crop_px == 0:
        return batch
    return batch[:, crop_px:-crop_px, crop_px:-crop_px]


def _log(source: Any, out: Any, a: float, b: float, c: float) -> Any:
    """out = a − b·ln(source + c) for (n, y, x) arrays; `out` may be `source` (in place)."""
    xp = array_namespace(source)
    xp.add(source, source.dtype.type(c), out=out)
    smallest = out.min(axis=(-2, -1))
    failing = xp.nonzero(smallest <= 0)[0]
    if failing.size:
        first = int(failing[0])
        minimum = float(smallest[first]) - c
        raise ValueError(
            f"log: micrograph {first} of the batch has x + c ≤ 0 (minimum x = {minimum:g}, "
            f"log_c = {c:g}); the logarithm is undefined there. Choose log_c > {-minimum:g} or "
            "disable do_log"
        )
    xp.log(out, out=out)
    out *= out.dtype.type(-b)
    out += out.dtype.type(a)
    return out


def log_transform(images: Any, a: float = 4.431, b: float = 0.402, c: float = 336.6) -> Any:
    """y = a − b·ln(x + c) (natural log; defaults are Xmipp's historical scanner values).

    Raises ValueError naming the micrograph (index in the batch) when x + c ≤ 0 anywhere.
    """
    batch, single = _as_batch(images, "log_transform")
    out = _log(batch, _empty_like(batch), a, b, c)
    return _unbatch(out, single)


def _check_stddev_factor(stddev_factor: float) -> None:
    if not stddev_factor > 0:
        raise ValueError(
            f"bad_pixel_stddev={stddev_factor!r} must be > 0 (threshold in standard deviations)"
        )


def remove_bad_pixels(images: Any, stddev_factor: float = 5.0) -> Any:
    """Replace outliers (outside mean ± k·std, k = `stddev_factor`) by the median of the good
    pixels of their 5×5 window; see `_badpixels` for the exact rule and its variant vs Xmipp."""
    _check_stddev_factor(stddev_factor)
    batch, single = _as_batch(images, "remove_bad_pixels")
    work = _private(batch, images)
    replace_bad_pixels_inplace(work, bad_pixel_mask(work, stddev_factor))
    return _unbatch(work, single)


def invert_contrast(images: Any) -> Any:
    """x -> −x."""
    batch, single = _as_batch(images, "invert_contrast")
    return _unbatch(-batch, single)


def _normalize(source: Any, out: Any) -> Any:
    """out = (source − mean) / std per image; `out` may be `source` (in place)."""
    xp = array_namespace(source)
    mean, std = mean_std(source)
    flat = xp.nonzero(std == 0)[0]
    if flat.size:
        raise ValueError(
            f"normalize: micrograph {int(flat[0])} of the batch is constant (std 0) and cannot "
            "be scaled to unit std; check the input or disable do_normalize"
        )
    rounded_mean = mean.astype(source.dtype)
    xp.subtract(source, xp.asarray(rounded_mean)[:, None, None], out=out)
    out *= xp.asarray((1.0 / std).astype(source.dtype))[:, None, None]
    # x − mean in two steps: the float rounding of the mean (≈ ulp(mean)) would otherwise
    # shift the output by up to ulp(mean) / std, e.g. 2e-5 for mean 1e4 and std 30
    residual = (mean - rounded_mean.astype(xp.float64)) / std
    out -= xp.asarray(residual.astype(source.dtype))[:, None, None]
    return out


def normalize_mean_std(images: Any) -> Any:
    """(x − mean) / std per micrograph, population std. ValueError for a constant micrograph."""
    batch, single = _as_batch(images, "normalize_mean_std")
    return _unbatch(_normalize(batch, _empty_like(batch)), single)


# ------------------------------------------------------------------------- Fourier transfer


def _raised_cosine(ramp: Any) -> Any:
    """½(1 + cos(π·clip(ramp, 0, 1))), computed in place in `ramp` (a new array)."""
    xp = array_namespace(ramp)
    xp.clip(ramp, 0, 1, out=ramp)
    ramp *= ramp.dtype.type(math.pi)
    xp.cos(ramp, out=ramp)
    ramp += 1
    ramp *= ramp.dtype.type(0.5)
    return ramp


def raised_cosine_lowpass(freq: Any, cutoff_digital: float, width_digital: float) -> Any:
    """Low-pass transfer: 1 below the cutoff, ½(1 + cos(π(|w| − wc)/wr)) up to wc + wr, 0 above.

    `freq` is |w| (digital, an array of any shape and backend); returns an array of its dtype.
    """
    ramp = freq - freq.dtype.type(cutoff_digital)
    ramp *= freq.dtype.type(1.0 / width_digital)
    return _raised_cosine(ramp)


def raised_cosine_highpass(freq: Any, cutoff_digital: float, width_digital: float) -> Any:
    """High-pass transfer: 0 below wc − wr, ½(1 + cos(π(wc − |w|)/wr)) up to wc, 1 above."""
    ramp = freq.dtype.type(cutoff_digital) - freq
    ramp *= freq.dtype.type(1.0 / width_digital)
    return _raised_cosine(ramp)


@dataclasses.dataclass(frozen=True)
class _FourierGroup:
    """Consecutive Fourier operations fused into one FFT pair (None = operation off)."""

    out_shape: tuple[int, int] | None = None  # (Yp, Xp) for downsampling
    sign: float = 1.0
    gaussian_sigma_px: float | None = None
    highpass: tuple[float, float] | None = None  # (cutoff, width), digital
    lowpass: tuple[float, float] | None = None

    def has_filter(self) -> bool:
        return not (self.gaussian_sigma_px is None and self.highpass is None
                    and self.lowpass is None)


def _transfer(group: _FourierGroup, shape: tuple[int, int], xp: Any, dtype: Any) -> Any | None:
    """Product of the group's transfer functions on the rfft2 grid of a `shape` = (Y, X) image."""
    if not group.has_filter():
        return None
    freq_y, freq_x = frequency_grid_rfft(shape, xp, dtype)
    transfer = None
    if group.gaussian_sigma_px is not None:
        # exp(−π²σ²(fy² + fx²)) is separable: an outer product instead of a full-grid exp.
        scale = dtype.type(-(math.pi * group.gaussian_sigma_px) ** 2)
        transfer = xp.exp(scale * freq_y * freq_y) * xp.exp(scale * freq_x * freq_x)
    if group.highpass is not None or group.lowpass is not None:
        radius = xp.sqrt(freq_y * freq_y + freq_x * freq_x)
        for band, function in ((group.highpass, raised_cosine_highpass),
                               (group.lowpass, raised_cosine_lowpass)):
            if band is not None:
                factor = function(radius, *band)
                if transfer is None:
                    transfer = factor
                else:
                    transfer *= factor
    if group.sign != 1.0:
        transfer *= dtype.type(group.sign)
    return transfer


def _kept_rows(n_out: int) -> tuple[int, int]:
    """(non-negative, negative) wave numbers kept along a full axis for an n_out-point output."""
    n_nonnegative = n_out // 2 + 1
    return n_nonnegative, n_out - n_nonnegative


def _forward_cropped(batch: Any, out_shape: tuple[int, int], workers: int | None) -> Any:
    """Half spectrum of `batch` (norm "forward") cropped to the window of an out_shape image."""
    xp = array_namespace(batch)
    height = batch.shape[-2]
    out_height, out_width = out_shape
    spectrum = rfft(batch, axis=-1, norm="forward", workers=workers)[..., : out_width // 2 + 1]
    spectrum = fft(spectrum, axis=-2, norm="forward", workers=workers)
    n_pos, n_neg = _kept_rows(out_height)
    parts = [spectrum[:, :n_pos]]
    if n_neg:
        parts.append(spectrum[:, height - n_neg:])
    return xp.concatenate(parts, axis=-2)


def _apply_fourier_group(batch: Any, group: _FourierGroup, workers: int | None) -> Any:
    """One forward FFT, crop (downsampling), multiply by the transfer product, one inverse."""
    shape = tuple(batch.shape[-2:])
    if group.out_shape is not None and tuple(group.out_shape) != shape:
        out_shape = tuple(group.out_shape)
        spectrum = _forward_cropped(batch, out_shape, workers)
    else:
        out_shape = shape
        spectrum = rfft2(batch, norm="forward", workers=workers)
    xp = array_namespace(batch)
    transfer = _transfer(group, out_shape, xp, batch.dtype)
    if transfer is not None:
        spectrum *= transfer
    if out_shape == shape:
        out = irfft2(spectrum, out_shape, norm="forward", workers=workers)
    else:
        spectrum = ifft(spectrum, axis=-2, norm="forward", workers=workers)
        out = irfft(spectrum, out_shape[1], axis=-1, norm="forward", workers=workers)
    if transfer is None and group.sign != 1.0:
        out *= out.dtype.type(group.sign)
    return out


def _check_factor(factor: float) -> None:
    if isinstance(factor, bool) or not isinstance(factor, numbers.Real) or not factor > 1:
        raise ValueError(
            f"downsample_factor={factor!r} must be a number > 1 (use do_downsample=False to keep "
            "the size)"
        )


def downsampled_shape(shape: tuple[int, ...], factor: float) -> tuple[int, int]:
    """Output (Yp, Xp) = (⌊Y/f⌋, ⌊X/f⌋) of `fourier_downsample` for trailing (Y, X) of `shape`."""
    _check_factor(factor)
    height, width = (int(n) for n in shape[-2:])
    # the tolerance makes decimal factors exact: 33 / 2.2 is 14.999999999999998 in floats
    out = (math.floor(height / factor + 1e-9), math.floor(width / factor + 1e-9))
    if min(out) < MIN_OUTPUT_PX:
        raise ValueError(
            f"downsample_factor={factor:g} turns a {width}×{height} micrograph into "
            f"{out[1]}×{out[0]} pixels; choose a factor ≤ {min(height, width) / MIN_OUTPUT_PX:g}"
        )
    return out


def fourier_downsample(images: Any, factor: float, *, workers: int | None = None
                       ) -> tuple[Any, tuple[float, float]]:
    """Fourier-downsample by a (non-integer) factor f > 1 (hard crop of the centred spectrum).

    Output (n, ⌊Y/f⌋, ⌊X/f⌋), mean preserved. Returns `(images, (factor_x, factor_y))` with the
    TRUE pixel-size factors X/Xp and Y/Yp: new pixel size = old · factor_x (Xmipp writes old · f).
    """
    batch, single = _as_batch(images, "fourier_downsample")
    out_shape = downsampled_shape(batch.shape, factor)
    out = _apply_fourier_group(batch, _FourierGroup(out_shape=out_shape), workers)
    factors = (batch.shape[-1] / out_shape[1], batch.shape[-2] / out_shape[0])
    return _unbatch(out, single), factors


def _check_band(name: str, cutoff: float, width: float) -> tuple[float, float]:
    if not 0 < cutoff < 0.5:
        raise ValueError(
            f"{name}_cutoff={cutoff!r} must be a digital frequency in (0, 0.5): 0.5 is Nyquist, "
            "digital = pixel_size_a / resolution_a"
        )
    if not width > 0:
        raise ValueError(f"{name}_width={width!r} must be a digital frequency width > 0")
    return float(cutoff), float(width)


def _check_sigma(sigma_px: float) -> float:
    if not sigma_px > 0:
        raise ValueError(f"gaussian_sigma_px={sigma_px!r} must be > 0 pixels")
    return float(sigma_px)


def fourier_gaussian_filter(images: Any, sigma_px: float, *, workers: int | None = None) -> Any:
    """Multiply the spectrum by exp(−π² σ² |w|²), σ = `sigma_px` (Xmipp's "real_gaussian").

    The effective real-space std is σ/√2 pixels (kept for compatibility with Xmipp settings).
    """
    batch, single = _as_batch(images, "fourier_gaussian_filter")
    group = _FourierGroup(gaussian_sigma_px=_check_sigma(sigma_px))
    return _unbatch(_apply_fourier_group(batch, group, workers), single)


def highpass_filter(images: Any, cutoff_digital: float, width_digital: float, *,
                    workers: int | None = None) -> Any:
    """Raised-cosine high-pass: removes |w| ≤ wc − wr, keeps |w| > wc (see
    `raised_cosine_highpass`). The DC term (mean) is removed."""
    batch, single = _as_batch(images, "highpass_filter")
    group = _FourierGroup(highpass=_check_band("highpass", cutoff_digital, width_digital))
    return _unbatch(_apply_fourier_group(batch, group, workers), single)


def lowpass_filter(images: Any, cutoff_digital: float, width_digital: float, *,
                   workers: int | None = None) -> Any:
    """Raised-cosine low-pass: keeps |w| < wc, removes |w| ≥ wc + wr (the cutoff is where the
    roll-off starts; see `raised_cosine_lowpass`)."""
    batch, single = _as_batch(images, "lowpass_filter")
    group = _FourierGroup(lowpass=_check_band("lowpass", cutoff_digital, width_digital))
    return _unbatch(_apply_fourier_group(batch, group, workers), single)


# ----------------------------------------------------------------------------- fused chain


@dataclasses.dataclass(frozen=True)
class PreprocessSettings:
    """Operations of `preprocess_micrographs` (names and defaults of the protocol parameters,
    Xmipp's defaults). Values of disabled operations are not checked."""

    do_crop: bool = False
    crop_px: int = 10
    do_log: bool = False
    log_a: float = 4.431
    log_b: float = 0.402
    log_c: float = 336.6
    do_remove_bad_pixels: bool = False
    bad_pixel_stddev: float = 5.0
    do_invert: bool = False
    do_downsample: bool = False
    downsample_factor: float = 2.0
    do_denoise: bool = False
    denoise_iterations: int = 50
    do_gaussian: bool = False
    gaussian_sigma_px: float = 2.0
    do_highpass: bool = False
    highpass_cutoff: float = 0.002
    highpass_width: float = 0.001
    do_lowpass: bool = False
    lowpass_cutoff: float = 0.4
    lowpass_width: float = 0.001
    do_normalize: bool = False

    def __post_init__(self) -> None:
        if self.do_crop and (isinstance(self.crop_px, bool) or not isinstance(self.crop_px, int)
                             or self.crop_px < 1):
            raise ValueError(f"crop_px={self.crop_px!r} must be an integer ≥ 1")
        if self.do_remove_bad_pixels:
            _check_stddev_factor(self.bad_pixel_stddev)
        if self.do_downsample:
            _check_factor(self.downsample_factor)
        if self.do_denoise:
            check_iterations(self.denoise_iterations)
        if self.do_gaussian:
            _check_sigma(self.gaussian_sigma_px)
        if self.do_highpass:
            _check_band("highpass", self.highpass_cutoff, self.highpass_width)
        if self.do_lowpass:
            _check_band("lowpass", self.lowpass_cutoff, self.lowpass_width)

    def enabled_operations(self) -> tuple[str, ...]:
        """Names of the enabled operations in the order they run."""
        names = ("crop", "log", "remove_bad_pixels", "invert", "downsample", "denoise",
                 "gaussian", "highpass", "lowpass", "normalize")
        return tuple(name for name in names if getattr(self, f"do_{name}"))

    def _filters(self) -> dict[str, Any]:
        return {
            "gaussian_sigma_px": self.gaussian_sigma_px if self.do_gaussian else None,
            "highpass": (self.highpass_cutoff, self.highpass_width) if self.do_highpass else None,
            "lowpass": (self.lowpass_cutoff, self.lowpass_width) if self.do_lowpass else None,
        }


def preprocess_output_shape(shape: tuple[int, ...], settings: PreprocessSettings
                            ) -> tuple[tuple[int, int], tuple[float, float]]:
    """((Yp, Xp), (factor_x, factor_y)) of `preprocess_micrographs` for trailing (Y, X) of `shape`.

    The factors multiply the input pixel size (1.0 without downsampling; cropping keeps it).
    Raises ValueError when the crop or the downsampling leaves too few pixels.
    """
    height, width = (int(n) for n in shape[-2:])
    if settings.do_crop:
        _check_crop((height, width), settings.crop_px)
        height, width = height - 2 * settings.crop_px, width - 2 * settings.crop_px
    if not settings.do_downsample:
        return (height, width), (1.0, 1.0)
    out = downsampled_shape((height, width), settings.downsample_factor)
    return out, (width / out[1], height / out[0])


def preprocess_micrographs(images: Any, settings: PreprocessSettings, *,
                           workers: int | None = None) -> tuple[Any, tuple[float, float]]:
    """Apply the enabled operations in the fixed order crop → log → bad pixels → invert →
    downsample → denoise → gaussian → high-pass → low-pass → normalize.

    images: (n, y, x) or (y, x), float32 (float64 kept), NumPy or CuPy; not modified.
    Returns `(images, (factor_x, factor_y))`: output pixel size = input pixel size · factor
    (the true X/Xp, Y/Yp of downsampling). Consecutive Fourier operations share one FFT pair
    (module notes); the result equals applying the operations one by one.
    """
    batch, single = _as_batch(images, "preprocess_micrographs")
    (_, _), factors = preprocess_output_shape(batch.shape, settings)
    owned = False  # True once `batch` is a private C-contiguous array we may overwrite

    def own() -> Any:
        nonlocal batch, owned
        if not owned:
            batch, owned = _private(batch, images), True
        return batch

    def into() -> Any:
        """Where an operation that reads `batch` once may write: itself, or a new array."""
        nonlocal owned
        target = batch if owned else _empty_like(batch)
        owned = True
        return target

    if settings.do_crop:
        batch = _crop_view(batch, settings.crop_px)
    if settings.do_log:
        batch = _log(batch, into(), settings.log_a, settings.log_b, settings.log_c)
    if settings.do_remove_bad_pixels:
        work = own()
        replace_bad_pixels_inplace(work, bad_pixel_mask(work, settings.bad_pixel_stddev))
    sign = -1.0 if settings.do_invert else 1.0
    out_shape = (downsampled_shape(batch.shape, settings.downsample_factor)
                 if settings.do_downsample else None)
    filters = settings._filters()
    if settings.do_denoise:
        first = _FourierGroup(out_shape=out_shape, sign=sign)
        second = _FourierGroup(**filters)
    else:
        first, second = _FourierGroup(out_shape=out_shape, sign=sign, **filters), None
    if first.out_shape is not None or first.has_filter():
        batch, owned = _apply_fourier_group(batch, first, workers), True
    elif sign != 1.0:
        batch = array_namespace(batch).negative(batch, out=into())
    if settings.do_denoise:
        denoise_tv_inplace(own(), settings.denoise_iterations, workers=workers)
        if second is not None and second.has_filter():
            batch = _apply_fourier_group(batch, second, workers)
    if settings.do_normalize:
        batch = _normalize(batch, into())
    return _unbatch(own(), single), factors
