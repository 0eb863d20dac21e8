"""Bad-pixel (outlier) removal for micrographs, vectorised, NumPy or CuPy.

Rule (spec "preprocess micrographs", item 3): per micrograph the mean μ and the population std σ
are computed once; a pixel is bad when x < μ − kσ or x > μ + kσ. Each bad pixel becomes the median
of the *good* pixels of its 5×5 window, clipped at the borders (an even count takes the mean of
the two middle values).

Variant: "originally good", in passes. In the first pass every bad pixel looks only at pixels that
were good in the input, so all bad pixels of a pass are independent and computed at once. Bad
pixels without a good neighbour are left for a further pass, in which the pixels filled by the
previous passes count as good; passes repeat until every bad pixel is filled. Xmipp
(`boundMedianFilter` in xmipp/src/xmipp/libraries/data/filters.h) instead visits bad pixels in
raster order and lets an already replaced pixel count as good for the later ones in the same
pass. The two agree whenever no two bad pixels share a 5×5 window (isolated hot pixels, the usual
case); for clusters ours does not depend on the scan direction.

Only the bad pixels are visited: their 5×5 neighbourhoods are gathered (flat indices), sorted and
the median taken per row, so the cost scales with the number of bad pixels, not the image size.
"""

from __future__ import annotations

import math
from typing import Any

from ._backend import array_namespace

WINDOW_RADIUS_PX = 2  # 5×5 window
_CHUNK_PIXELS = 1 << 18  # bad pixels gathered at once (25 neighbours each)
_STATS_BLOCK_PIXELS = 1 << 16  # pixels per block of the NumPy statistics


def _mean_std_blocked(images: Any) -> tuple[Any, Any]:
    """NumPy: the sums of `mean_std` over blocks of rows that stay in the CPU cache."""
    import numpy

    n, height, width = images.shape
    rows = max(1, _STATS_BLOCK_PIXELS // width)
    buffer = numpy.empty((rows, width), images.dtype)
    means, stds = numpy.empty(n), numpy.empty(n)
    for index, image in enumerate(images):
        # a first, rough mean; then sums of x − rough, which are small: float32 pairwise sums per
        # block stay accurate to ~ulp of the fluctuations, not of the mean
        total = sum(float(image[r:r + rows].sum()) for r in range(0, height, rows))
        rough = image.dtype.type(total / (height * width))
        first, second = 0.0, 0.0
        for r in range(0, height, rows):
            block = image[r:r + rows]
            centred = numpy.subtract(block, rough, out=buffer[: block.shape[0]])
            first += float(centred.sum())
            centred *= centred
            second += float(centred.sum())
        shift = first / (height * width)
        means[index] = float(rough) + shift
        stds[index] = math.sqrt(max(second / (height * width) - shift * shift, 0.0))
    return means, stds


def mean_std(images: Any) -> tuple[Any, Any]:
    """Per-image mean and population std of `(n, y, x)` images, as float64 arrays of shape (n,).

    Sums are accumulated in float64 without a float64 copy of the images.
    """
    xp = array_namespace(images)
    if xp.__name__ == "numpy":
        return _mean_std_blocked(images)
    n_pixels = images.shape[-1] * images.shape[-2]
    mean = images.sum(axis=(-2, -1), dtype=xp.float64) / n_pixels
    rounded = mean.astype(images.dtype)
    centred = images - rounded[:, None, None]
    centred *= centred
    # The rounded mean is what was subtracted; correct the variance for its rounding.
    offset = mean - rounded.astype(xp.float64)
    variance = centred.sum(axis=(-2, -1), dtype=xp.float64) / n_pixels - offset * offset
    return mean, xp.sqrt(xp.maximum(variance, 0.0))


def _float_bounds(xp: Any, low: Any, high: Any, dtype: Any) -> tuple[Any, Any]:
    """Thresholds in the image dtype with the same outcome as comparing in float64.

    x < low ⇔ x < ceil_dtype(low) and x > high ⇔ x > floor_dtype(high) for x of `dtype`.
    """
    info_max = xp.asarray(xp.finfo(dtype).max, dtype=dtype)
    low_t, high_t = low.astype(dtype), high.astype(dtype)
    low_t = xp.where(low_t.astype(xp.float64) < low, xp.nextafter(low_t, info_max), low_t)
    high_t = xp.where(high_t.astype(xp.float64) > high, xp.nextafter(high_t, -info_max), high_t)
    return low_t, high_t


def bad_pixel_mask(images: Any, stddev_factor: float) -> Any:
    """Boolean mask of outliers: x < μ − kσ or x > μ + kσ per image (k = `stddev_factor`)."""
    xp = array_namespace(images)
    mean, std = mean_std(images)
    low, high = _float_bounds(xp, mean - stddev_factor * std, mean + stddev_factor * std,
                              images.dtype)
    mask = images < low[:, None, None]
    mask |= images > high[:, None, None]
    return mask


def _neighbour_medians(flat: Any, bad_flat: Any, index: Any, shape: tuple[int, int, int]
                       ) -> tuple[Any, Any]:
    """Median of the good pixels in the 5×5 window of each flat `index`.

    Returns (medians, found): `found` is False where the window holds no good pixel.
    """
    xp = array_namespace(flat)
    _, height, width = shape
    row = (index // width) % height
    col = index % width
    offsets = range(-WINDOW_RADIUS_PX, WINDOW_RADIUS_PX + 1)
    values, good = [], []
    inf = xp.asarray(xp.inf, dtype=flat.dtype)
    for dy in offsets:
        row_ok = (row + dy >= 0) & (row + dy < height)
        for dx in offsets:
            inside = row_ok & (col + dx >= 0) & (col + dx < width)
            neighbour = xp.where(inside, index + (dy * width + dx), index)
            ok = inside & ~bad_flat[neighbour]
            good.append(ok)
            values.append(xp.where(ok, flat[neighbour], inf))
    window = xp.sort(xp.stack(values, axis=1), axis=1)
    count = xp.stack(good, axis=1).sum(axis=1)
    lower = xp.take_along_axis(window, xp.maximum(count - 1, 0)[:, None] // 2, axis=1)[:, 0]
    upper = xp.take_along_axis(window, (count // 2)[:, None], axis=1)[:, 0]
    # As Xmipp: the mean of the two middle values is taken in double precision.
    medians = ((lower.astype(xp.float64) + upper.astype(xp.float64)) * 0.5).astype(flat.dtype)
    return medians, count > 0


def replace_bad_pixels_inplace(images: Any, mask: Any) -> Any:
    """Fill the pixels flagged in `mask` (same shape as `images`, (n, y, x)) in place.

    Passes as described in the module notes; `mask` is consumed (cleared where filled). Images
    without any good pixel are left unchanged. Returns `images`.
    """
    xp = array_namespace(images, mask)
    flat = images.reshape(-1)
    bad_flat = mask.reshape(-1)
    pending = xp.nonzero(bad_flat)[0]
    while pending.size:
        filled_index, filled_value, still_pending = [], [], []
        for start in range(0, int(pending.size), _CHUNK_PIXELS):
            index = pending[start:start + _CHUNK_PIXELS]
            medians, found = _neighbour_medians(flat, bad_flat, index, images.shape)
            filled_index.append(index[found])
            filled_value.append(medians[found])
            still_pending.append(index[~found])
        # Written only after the whole pass: a pixel filled now counts as good from the next pass.
        done = xp.concatenate(filled_index)
        if not done.size:
            break  # only images without a single good pixel remain
        flat[done] = xp.concatenate(filled_value)
        bad_flat[done] = False
        pending = xp.concatenate(still_pending)
    return images
