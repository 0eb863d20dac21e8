"""Numerics on NumPy (CPU) or CuPy (GPU) with the same code.

Kernels take the array namespace from their inputs (NumPy in -> NumPy out, CuPy in -> CuPy out);
moving data between host and device is explicit (`to_device`, `to_host`). This package imports
only NumPy and SciPy; CuPy is imported when a GPU is asked for.

Conventions (RELION/Xmipp): images `(..., y, x)`, volumes `(..., z, y, x)`, data float32; the
centre of an N-point axis is index N // 2; digital frequency of FFT index i is i/N for i ≤ N/2,
else (i − N)/N cycles/pixel.
"""

from ._backend import (
    array_namespace,
    batch_size_for,
    cupy_available,
    fft_workers,
    free_device_memory_bytes,
    get_namespace,
    is_out_of_memory,
    map_batches_with_oom_retry,
    resolve_device,
    to_device,
    to_host,
)
from ._denoise import denoise_tv
from ._fft import (
    fft,
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
)
from ._fourier import (
    fourier_crop,
    fourier_crop_volume,
    fourier_crop_working_bytes,
    fourier_pad,
    fourier_pad_volume,
)
from ._preprocess import (
    PreprocessSettings,
    crop_border,
    downsampled_shape,
    fourier_downsample,
    fourier_gaussian_filter,
    highpass_filter,
    invert_contrast,
    log_transform,
    lowpass_filter,
    normalize_mean_std,
    preprocess_micrographs,
    preprocess_output_shape,
    raised_cosine_highpass,
    raised_cosine_lowpass,
    remove_bad_pixels,
)

__all__ = [
    "PreprocessSettings",
    "array_namespace",
    "batch_size_for",
    "crop_border",
    "cupy_available",
    "denoise_tv",
    "downsampled_shape",
    "fft",
    "fft_workers",
    "fftn",
    "fftshift",
    "fourier_crop",
    "fourier_crop_volume",
    "fourier_crop_working_bytes",
    "fourier_downsample",
    "fourier_gaussian_filter",
    "fourier_pad",
    "fourier_pad_volume",
    "free_device_memory_bytes",
    "frequency_grid",
    "frequency_grid_rfft",
    "get_namespace",
    "highpass_filter",
    "ifft",
    "ifftn",
    "ifftshift",
    "invert_contrast",
    "irfft",
    "irfft2",
    "irfftn",
    "is_out_of_memory",
    "log_transform",
    "lowpass_filter",
    "map_batches_with_oom_retry",
    "normalize_mean_std",
    "preprocess_micrographs",
    "preprocess_output_shape",
    "raised_cosine_highpass",
    "raised_cosine_lowpass",
    "remove_bad_pixels",
    "resolve_device",
    "rfft",
    "rfft2",
    "rfftn",
    "to_device",
    "to_host",
]
