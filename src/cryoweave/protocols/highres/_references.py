"""References for the next iteration, per half (spec: "The iteration", step 3).

Rescaled to the working grid, weighted by the previous FSC with sqrt(2·FSC/(1+FSC)) clipped to
[0, 1] per spatial frequency (the expected correlation of a half map with the truth; Xmipp
multiplies by the FSC and zeroes the DC — we keep the DC), low-passed (raised cosine) at the
previous resolution + offset, masked (soft sphere or the user's mask), made non-negative and
thinned by dropout, as the parameters ask.

Positivity (Xmipp's, negative values set to zero) is a prior for a non-negative density, such
as a simulated phantom's. Many maps are not one: normalised to zero mean or filtered, about
half their mass is negative (the 70S ribosome of the `make validate` ribosome case: 47 %, at
every resolution from 12 to 30 Å), and clipping them drops real structure and biases the
alignment (FSC 0.5 against the truth 17.511 → 17.430 Å without positivity; true poses 17.267).
So positivity is applied only where the reference, after its weighting, low-pass and mask,
has less than POSITIVITY_MAX_NEGATIVE_MASS of its mass (sum of |values|) negative: the
phantom's references have 6–9 % (the truths of both phantoms low-passed to 12–30 Å: 4–8 %),
the ribosome's 46–47 % (benchmarks/highres_positivity.py).

The volume may live on the GPU: every operation runs where it is (the user's mask and the
dropout draw, made on the host from the seeded generator, are moved there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cryoweave.engine import (
    array_namespace,
    frequency_grid_rfft,
    irfftn,
    lowpass_filter_a,
    resample_volume,
    rfftn,
    soft_sphere_mask,
    window_volume,
)
from cryoweave.protocols._shared.device import to_device
from cryoweave.protocols.highres._state import centre_offset_px

POSITIVITY_MAX_NEGATIVE_MASS = 0.25


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


def negative_mass_fraction(volume: Any) -> float:
    """The share of the volume's mass (sum of |values|) in its negative values: 0 for a
    non-negative density, about 0.5 for one of zero mean; 0 for an all-zero volume."""
    xp = array_namespace(volume)
    total = float(xp.abs(volume).sum())
    return float(xp.abs(xp.minimum(volume, 0)).sum()) / total if total > 0 else 0.0


def positivity_record(negative_mass: float) -> dict[str, Any]:
    """What the iteration's record says of one reference's positivity (module notes)."""
    return {"negative_mass_fraction": negative_mass,
            "applied": negative_mass < POSITIVITY_MAX_NEGATIVE_MASS}


def _same_device(x: Any, like: Any) -> Any:
    return to_device(x, "cpu" if array_namespace(like) is np else "gpu")


def apply_frequency_weights(volume: Any, pixel_size_a: float, frequency_per_a: np.ndarray,
                            weights: np.ndarray) -> Any:
    """Multiply the volume's transform by weights(|frequency|) (linear interpolation, the
    last weight beyond the curve, DC weight 1). Runs on the volume's device."""
    xp = array_namespace(volume)
    n = volume.shape[0]
    kz, ky, kx = frequency_grid_rfft((n, n, n), xp, np.float64)
    radius = xp.sqrt(kz**2 + ky**2 + kx**2) / pixel_size_a
    factor = xp.interp(radius, _same_device(frequency_per_a, volume),
                       _same_device(weights, volume), left=1.0, right=float(weights[-1]))
    factor[0, 0, 0] = 1.0
    spectrum = rfftn(xp.asarray(volume, xp.float32), ndim=3) * factor.astype(xp.float32)
    return xp.asarray(irfftn(spectrum, (n, n, n)), xp.float32)


def shift_volume(volume: Any, shift_px: float) -> Any:
    """The volume translated by ``shift_px`` along each of z, y and x (Fourier phase ramp),
    on the volume's device."""
    xp = array_namespace(volume)
    n = volume.shape[0]
    kz, ky, kx = frequency_grid_rfft((n, n, n), xp, np.float64)
    ramp = xp.exp(-2j * np.pi * shift_px * (kz + ky + kx))
    return xp.asarray(irfftn(rfftn(xp.asarray(volume, xp.float32), ndim=3) * ramp, (n,) * 3),
                      xp.float32)


def resample_centred(volume: Any, pixel_size_a: float, target_pixel_a: float,
                     box_px: int | None = None) -> tuple[Any, float]:
    """``resample_volume`` with the centre kept at index N//2 (the Fourier crop/pad keeps
    index 0 fixed: odd boxes would move the centre by up to half a pixel); on the volume's
    device."""
    xp = array_namespace(volume)
    n = volume.shape[0]
    resampled, pixel = resample_volume(xp.asarray(volume, xp.float32), pixel_size_a,
                                       target_pixel_a)
    offset = centre_offset_px(n, resampled.shape[0])
    if abs(offset) > 1e-9:
        resampled = shift_volume(resampled, offset)
    if box_px is not None:
        resampled = window_volume(resampled, box_px)
    return xp.asarray(resampled, xp.float32), pixel


def prepare_reference(volume: Any, pixel_size_a: float, *, box_px: int,
                      working_pixel_a: float, lowpass_resolution_a: float | None,
                      previous_fsc: tuple[np.ndarray, np.ndarray] | None,
                      options: ReferenceOptions, user_mask: np.ndarray | None = None,
                      rng: np.random.Generator | None = None) -> tuple[Any, float | None]:
    """The reference of one half on the working grid ``(box, box, box)`` float32, on the
    volume's device (NumPy or CuPy), and its negative mass fraction before positivity (None
    when positivity is off; positivity was applied when it is below
    POSITIVITY_MAX_NEGATIVE_MASS: module notes)."""
    xp = array_namespace(volume)
    reference, pixel = resample_centred(volume, pixel_size_a, working_pixel_a, box_px)
    if previous_fsc is not None:
        reference = apply_frequency_weights(reference, pixel, *fsc_weights(*previous_fsc))
    if options.lowpass and lowpass_resolution_a:
        reference = xp.asarray(lowpass_filter_a(reference, lowpass_resolution_a, pixel),
                               xp.float32)
    if user_mask is not None:
        mask, _ = resample_centred(_same_device(np.asarray(user_mask, np.float32), volume),
                                   pixel_size_a, working_pixel_a, box_px)
        reference = reference * xp.clip(xp.asarray(mask, xp.float32), 0, 1)
    elif options.spherical_mask:
        radius = options.mask_radius_px or box_px / 2 - options.edge_width_px
        reference = reference * soft_sphere_mask(box_px, radius,
                                                 edge_width_px=options.edge_width_px, ndim=3,
                                                 xp=xp)
    negative_mass = None
    if options.positivity:
        negative_mass = negative_mass_fraction(reference)
        if negative_mass < POSITIVITY_MAX_NEGATIVE_MASS:
            reference = xp.maximum(reference, 0.0)
    if options.dropout > 0:
        rng = rng or np.random.default_rng(0)
        keep = rng.random(reference.shape) >= options.dropout  # drawn on the host: seeded
        reference = reference * _same_device(keep, volume)
    return xp.asarray(reference, xp.float32), negative_mass
