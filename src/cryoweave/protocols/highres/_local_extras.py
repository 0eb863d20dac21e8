"""Local refinement of gray values and magnification (spec: local options scale and gray).

Gray values: at its pose, each particle is fitted as a·(CTF·projection) + b inside the
particle mask (least squares); a is normalised by the median over the particles, limited to
1 ± ``max_scale_change`` and b to ± ``max_offset_sigma`` standard deviations of the residual.
The reconstruction then uses (image − b)/a.

Scale: each particle is resampled by magnifications 1 ± ``max_change`` (5 values, cubic
spline about the box centre) and scored at its pose; a parabola through the best value and
its neighbours gives the particle's scale s. The reconstruction resamples the image by 1/s.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from cryoweave.engine import Projector, pose_scores


def magnify(images: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Images magnified by ``scale`` (n,) about the centre N//2 (cubic spline, float32).

    Periodic boundaries: the CTF spreads signal to the box edges, and a periodic resampling
    is what sampling the spectrum at scaled frequencies does (no zero-filled border).
    """
    n = images.shape[-1]
    centre = np.array([n // 2, n // 2], np.float64)
    out = np.empty_like(images)
    for i, (image, s) in enumerate(zip(images, scale, strict=True)):
        if s == 1.0:
            out[i] = image
            continue
        matrix = np.eye(2) / s
        out[i] = ndimage.affine_transform(image, matrix, offset=centre - matrix @ centre,
                                          order=3, mode="grid-wrap")
    return out


def refine_scale(images: np.ndarray, ctfs: np.ndarray, reference: np.ndarray,
                 poses: dict[str, np.ndarray], *, max_change: float, r_max_px: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per-particle magnification s and the NCC at s."""
    values = np.linspace(1 - max_change, 1 + max_change, 5)
    table = np.stack([pose_scores(magnify(images, np.full(len(images), 1 / v)), ctfs,
                                  reference, r_max_px=r_max_px, **poses) for v in values],
                     axis=1)
    best = np.argmax(table, axis=1)
    inner = np.clip(best, 1, 3)
    rows = np.arange(len(images))
    left, centre, right = (table[rows, inner + d] for d in (-1, 0, 1))
    curvature = left - 2 * centre + right
    offset = np.where(curvature < 0, 0.5 * (left - right) / np.where(curvature < 0,
                                                                      curvature, -1), 0.0)
    scale = values[inner] + np.clip(offset, -1, 1) * (values[1] - values[0])
    scale = np.where(curvature < 0, scale, values[best])
    return scale, table[rows, best]


def fit_gray(images: np.ndarray, ctfs: np.ndarray, reference: np.ndarray,
             poses: dict[str, np.ndarray], mask: np.ndarray, *, max_scale_change: float,
             max_offset_sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) per particle with image ≈ a·model + b inside ``mask``."""
    from cryoweave.engine import euler_to_matrix

    projector = Projector.from_volume(np.asarray(reference, np.float32))
    matrices = euler_to_matrix(poses["rot_deg"], poses["tilt_deg"], poses["psi_deg"])
    origins = np.stack([poses["origin_x_px"], poses["origin_y_px"]], axis=1)
    model = projector.project(matrices, origin_xy_px=origins, ctf=ctfs)
    inside = mask > 0.5
    x = model[:, inside].astype(np.float64)
    y = images[:, inside].astype(np.float64)
    x_mean, y_mean = x.mean(axis=1, keepdims=True), y.mean(axis=1, keepdims=True)
    slope = ((x - x_mean) * (y - y_mean)).sum(axis=1) / np.maximum(
        ((x - x_mean) ** 2).sum(axis=1), 1e-30)
    intercept = y_mean[:, 0] - slope * x_mean[:, 0]
    median = float(np.median(slope[slope > 0])) if (slope > 0).any() else 1.0
    relative = np.clip(slope / median, 1 - max_scale_change, 1 + max_scale_change)
    sigma = (y - (slope[:, None] * x + intercept[:, None])).std(axis=1)
    offset = np.clip(intercept, -max_offset_sigma * sigma, max_offset_sigma * sigma)
    return relative, offset
