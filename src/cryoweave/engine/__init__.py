"""Numerics on NumPy (CPU) or CuPy (GPU) with the same code.

Kernels take the array namespace from their inputs (NumPy in -> NumPy out, CuPy in -> CuPy out);
moving data between host and device is explicit (`to_device`, `to_host`). This package imports
only NumPy and SciPy; CuPy is imported when a GPU is asked for.

Conventions (RELION/Xmipp): images `(..., y, x)`, volumes `(..., z, y, x)`, data float32; the
centre of an N-point axis is index N // 2; digital frequency of FFT index i is i/N for i ≤ N/2,
else (i − N)/N cycles/pixel.
"""

from ._alignment import AlignmentResult, global_search, pose_scores
from ._alignment_local import local_search
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
from ._ctf import (
    ctf_2d,
    electron_wavelength_a,
    group_identical_ctfs,
    phase_flip,
    wiener_filter,
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
from ._filters import apply_bfactor, lowpass_filter_a, soft_cylinder_mask, soft_sphere_mask
from ._fourier import (
    fourier_crop,
    fourier_crop_volume,
    fourier_crop_working_bytes,
    fourier_pad,
    fourier_pad_volume,
)
from ._fsc import FscCurve, fsc
from ._geometry import (
    euler_to_matrix,
    matrix_to_euler,
    projection_direction,
    rotation_angle_deg,
    shift_images,
    shift_phase,
)
from ._maps import (
    background_region,
    flip_hand,
    normalize_volume,
    symmetrize_volume,
    threshold_mask,
)
from ._phantom import atom_positions, atoms_phantom
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
from ._projection import Projector, backproject, project
from ._reconstruction import ReconstructionAccumulator, reconstruct
from ._resample import resample_volume, window_volume
from ._sampling import orientation_grid, psi_sampling, sphere_sampling
from ._symmetry import (
    in_asymmetric_unit,
    symmetry_aware_angular_distance,
    symmetry_expand,
    symmetry_matrices,
    symmetry_order,
)

__all__ = [
    "AlignmentResult",
    "FscCurve",
    "PreprocessSettings",
    "Projector",
    "ReconstructionAccumulator",
    "apply_bfactor",
    "array_namespace",
    "atom_positions",
    "atoms_phantom",
    "background_region",
    "backproject",
    "batch_size_for",
    "crop_border",
    "ctf_2d",
    "cupy_available",
    "denoise_tv",
    "downsampled_shape",
    "electron_wavelength_a",
    "euler_to_matrix",
    "fft",
    "fft_workers",
    "fftn",
    "fftshift",
    "flip_hand",
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
    "fsc",
    "get_namespace",
    "global_search",
    "group_identical_ctfs",
    "highpass_filter",
    "ifft",
    "ifftn",
    "ifftshift",
    "in_asymmetric_unit",
    "invert_contrast",
    "irfft",
    "irfft2",
    "irfftn",
    "is_out_of_memory",
    "local_search",
    "log_transform",
    "lowpass_filter",
    "lowpass_filter_a",
    "map_batches_with_oom_retry",
    "matrix_to_euler",
    "normalize_mean_std",
    "normalize_volume",
    "orientation_grid",
    "phase_flip",
    "pose_scores",
    "preprocess_micrographs",
    "preprocess_output_shape",
    "project",
    "projection_direction",
    "psi_sampling",
    "raised_cosine_highpass",
    "raised_cosine_lowpass",
    "reconstruct",
    "remove_bad_pixels",
    "resample_volume",
    "resolve_device",
    "rfft",
    "rfft2",
    "rfftn",
    "rotation_angle_deg",
    "shift_images",
    "shift_phase",
    "soft_cylinder_mask",
    "soft_sphere_mask",
    "sphere_sampling",
    "symmetrize_volume",
    "symmetry_aware_angular_distance",
    "symmetry_expand",
    "symmetry_matrices",
    "symmetry_order",
    "threshold_mask",
    "to_device",
    "to_host",
    "wiener_filter",
    "window_volume",
]
