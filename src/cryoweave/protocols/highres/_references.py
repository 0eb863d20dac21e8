"""References for the next iteration, per half (spec: "The iteration", step 3).

Rescaled to the working grid, weighted by the previous FSC with sqrt(2·FSC/(1+FSC)) clipped to
[0, 1] per spatial frequency (the expected correlation of a half map with the truth; Xmipp
multiplies by the FSC and zeroes the DC — we keep the DC), low-passed (raised cosine) at the
previous resolution + offset, masked (soft sphere or the user's mask), made non-negative and
thinned by dropout, as the parameters ask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cryoweave.engine import (
    irfftn,
    lowpass_filter_a,
    resample_volume,
    rfftn,
    soft_sphere_mask,
    window_volume,
)
from cryoweave.protocols.highres._state import centre_offset_px


@dataclass(frozen=True)
class ReferenceOptions:
    lowpass: bool = True
    spherical_mask: bool = True
    positivity: bool = True
    dropout: float = 0.0
    mask_radius_px: float | None = None  # at the working pixel size
    edge_width_px: float = 3.0


def fsc_weights(frequency_per_a: np.ndarray, fsc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(frequency, weight) with weight = sqrt(2·FSC / (1 + FSC)) clipped to [0, 1]."""
    values = np.clip(np.asarray(fsc, np.float64), 0.0, 1.0)
    return np.asarray(frequency_per_a, np.float64), np.sqrt(2 * values / (1 + values))


def apply_frequency_weights(volume: np.ndarray, pixel_size_a: float, frequency_per_a: np.ndarray,
                            weights: np.ndarray) -> np.ndarray:
    """Multiply the volume's transform by weights(|frequency|) (linear interpolation, the
    last weight beyond the curve, DC weight 1)."""
    n = volume.shape[0]
    axes = [np.fft.fftfreq(n), np.fft.fftfreq(n), np.fft.rfftfreq(n)]
    kz, ky, kx = np.meshgrid(*axes, indexing="ij", sparse=True)
    radius = np.sqrt(kz**2 + ky**2 + kx**2) / pixel_size_a
    factor = np.interp(radius, frequency_per_a, weights, left=1.0, right=float(weights[-1]))
    factor[0, 0, 0] = 1.0
    spectrum = rfftn(np.asarray(volume, np.float32), ndim=3) * factor.astype(np.float32)
    return np.asarray(irfftn(spectrum, (n, n, n)), np.float32)


def shift_volume(volume: np.ndarray, shift_px: float) -> np.ndarray:
    """The volume translated by ``shift_px`` along each of z, y and x (Fourier phase ramp)."""
    n = volume.shape[0]
    axes = [np.fft.fftfreq(n), np.fft.fftfreq(n), np.fft.rfftfreq(n)]
    kz, ky, kx = np.meshgrid(*axes, indexing="ij", sparse=True)
    ramp = np.exp(-2j * np.pi * shift_px * (kz + ky + kx))
    return np.asarray(irfftn(rfftn(np.asarray(volume, np.float32), ndim=3) * ramp, (n,) * 3),
                      np.float32)


def resample_centred(volume: np.ndarray, pixel_size_a: float, target_pixel_a: float,
                     box_px: int | None = None) -> tuple[np.ndarray, float]:
    """``resample_volume`` with the centre kept at index N//2 (the Fourier crop/pad keeps
    index 0 fixed: odd boxes would move the centre by up to half a pixel)."""
    n = volume.shape[0]
    resampled, pixel = resample_volume(np.asarray(volume, np.float32), pixel_size_a,
                                       target_pixel_a)
    offset = centre_offset_px(n, resampled.shape[0])
    if abs(offset) > 1e-9:
        resampled = shift_volume(resampled, offset)
    if box_px is not None:
        resampled = window_volume(resampled, box_px)
    return np.asarray(resampled, np.float32), pixel


def prepare_reference(volume: np.ndarray, pixel_size_a: float, *, box_px: int,
                      working_pixel_a: float, lowpass_resolution_a: float | None,
                      previous_fsc: tuple[np.ndarray, np.ndarray] | None,
                      options: ReferenceOptions, user_mask: np.ndarray | None = None,
                      rng: np.random.Generator | None = None) -> np.ndarray:
    """The reference of one half on the working grid ``(box, box, box)`` float32."""
    reference, pixel = resample_centred(volume, pixel_size_a, working_pixel_a, box_px)
    if previous_fsc is not None:
        reference = apply_frequency_weights(reference, pixel, *fsc_weights(*previous_fsc))
    if options.lowpass and lowpass_resolution_a:
        reference = np.asarray(lowpass_filter_a(reference, lowpass_resolution_a, pixel),
                               np.float32)
    if user_mask is not None:
        mask, _ = resample_centred(user_mask, pixel_size_a, working_pixel_a, box_px)
        reference = reference * np.clip(np.asarray(mask, np.float32), 0, 1)
    elif options.spherical_mask:
        radius = options.mask_radius_px or box_px / 2 - options.edge_width_px
        reference = reference * soft_sphere_mask(box_px, radius,
                                                 edge_width_px=options.edge_width_px, ndim=3)
    if options.positivity:
        reference = np.maximum(reference, 0.0)
    if options.dropout > 0:
        rng = rng or np.random.default_rng(0)
        reference = reference * (rng.random(reference.shape) >= options.dropout)
    return np.asarray(reference, np.float32)
