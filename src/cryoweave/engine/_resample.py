"""Volumes on another grid: Fourier resampling to a pixel size, real-space windowing to a box."""

from __future__ import annotations

from typing import Any

from ._backend import array_namespace
from ._fourier import fourier_crop_volume, fourier_pad_volume


def window_volume(volume: Any, box_px: int) -> Any:
    """Crop or zero-pad a cubic volume ``(N, N, N)`` to ``(box, box, box)`` about index N//2."""
    xp = array_namespace(volume)
    n = volume.shape[0]
    if box_px == n:
        return volume
    out = xp.zeros((box_px,) * 3, dtype=volume.dtype)
    lo_in, lo_out = max(0, n // 2 - box_px // 2), max(0, box_px // 2 - n // 2)
    size = min(n, box_px)
    region_in = slice(lo_in, lo_in + size)
    region_out = slice(lo_out, lo_out + size)
    out[region_out, region_out, region_out] = volume[region_in, region_in, region_in]
    return out


def resample_volume(volume: Any, pixel_size_a: float, target_pixel_a: float | None = None,
                    target_box_px: int | None = None) -> tuple[Any, float]:
    """The volume at (about) ``target_pixel_a`` and in a ``target_box_px`` box.

    volume: ``(N, N, N)`` float32. The pixel size changes by Fourier cropping or padding to
    round(N·pixel/target) (so the result's pixel size is exact: pixel·N/size, returned), then
    the box by real-space windowing about N//2. Values keep their scale (mean preserved).
    """
    n = volume.shape[0]
    pixel = float(pixel_size_a)
    if target_pixel_a is not None and abs(target_pixel_a - pixel) > 1e-9 * pixel:
        size = max(2, round(n * pixel / target_pixel_a))
        if size != n:
            volume = (fourier_crop_volume(volume, size) if size < n
                      else fourier_pad_volume(volume, size))
            pixel = pixel * n / size
    if target_box_px is not None:
        volume = window_volume(volume, int(target_box_px))
    return volume, pixel
