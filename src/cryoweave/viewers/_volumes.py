"""Pictures of maps: central sections or projections in the XY, XZ and YZ planes, each panel at
least 256 px, titled, with a scale bar in Å.

Planes of a ``(z, y, x)`` volume about the centre N // 2: XY is ``volume[z0]`` (x across, y
down), XZ is ``volume[:, y0, :]`` (x across, z down), YZ is ``volume[:, :, x0]`` (y across, z
down). Projections sum along the missing axis. The three panels share one grey scale.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from cryoweave.viewers._images import _pyplot, save_figure, stretch

PLANES = ("XY", "XZ", "YZ")
MIN_PANEL_PX = 256


def nice_length(limit: float) -> float:
    """The largest 1, 2 or 5 × 10^k not above ``limit`` (> 0)."""
    exponent = math.floor(math.log10(limit))
    for mantissa in (5, 2, 1):
        value = mantissa * 10.0**exponent
        if value <= limit:
            return value
    return 10.0**exponent


def planes(volume: np.ndarray, mode: str = "slices") -> list[np.ndarray]:
    """The XY, XZ and YZ pictures of ``volume``: central sections or sums (``projections``)."""
    if mode == "slices":
        z, y, x = (s // 2 for s in volume.shape)
        return [volume[z], volume[:, y, :], volume[:, :, x]]
    if mode == "projections":
        return [volume.sum(axis=0), volume.sum(axis=1), volume.sum(axis=2)]
    raise ValueError(f"mode={mode!r}: use 'slices' or 'projections'")


def add_scale_bar(ax: Any, width_px: int, height_px: int, pixel_size_a: float) -> str:
    """A white bar of a round length (about a quarter of the width) at the bottom left, with
    its length in Å; returns the label."""
    length_a = nice_length(0.3 * width_px * pixel_size_a)
    length_px = length_a / pixel_size_a
    x0, y0 = 0.06 * width_px, 0.92 * height_px
    ax.plot([x0, x0 + length_px], [y0, y0], color="white", linewidth=3,
            solid_capstyle="butt")
    label = f"{length_a:g} Å"
    ax.text(x0 + length_px / 2, y0 - 0.03 * height_px, label, color="white", ha="center",
            va="bottom", fontsize=8)
    return label


def volume_figure(volume: np.ndarray, pixel_size_a: float, *, title: str,
                  mode: str = "slices", panel_px: int = 300) -> Any:
    """A matplotlib figure of the three planes (see module notes); ``panel_px`` ≥ 256 is the
    size of each panel at 100 dpi."""
    plt = _pyplot()
    pictures = planes(np.asarray(volume, np.float64), mode)
    joined = np.concatenate([p.ravel() for p in pictures])
    low, high = np.percentile(joined, [0.5, 99.5])
    size = max(panel_px, MIN_PANEL_PX) / 100
    figure, axes = plt.subplots(1, 3, figsize=(3 * size + 0.6, size + 0.9), dpi=100)
    what = "central sections" if mode == "slices" else "projections (sums)"
    for ax, picture, plane in zip(axes, pictures, PLANES, strict=True):
        shown = stretch(picture, 0, 100) if high <= low else \
            np.clip((picture - low) / (high - low), 0, 1)
        ax.imshow(shown, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"{plane} {'section' if mode == 'slices' else 'projection'}", fontsize=9)
        ax.set_xlabel(plane[0].lower(), fontsize=8)
        ax.set_ylabel(plane[1].lower(), fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        add_scale_bar(ax, picture.shape[1], picture.shape[0], pixel_size_a)
    n = volume.shape[0]
    figure.suptitle(f"{title} — {what}, {n} px at {pixel_size_a:.3g} Å/px", fontsize=10)
    figure.subplots_adjust(left=0.03, right=0.99, bottom=0.08, top=0.82, wspace=0.08)
    return figure


def plot_volume(volume: np.ndarray, pixel_size_a: float, path: str | Path, *, title: str,
                mode: str = "slices") -> Path:
    """:func:`volume_figure` saved as a PNG."""
    return save_figure(volume_figure(volume, pixel_size_a, title=title, mode=mode), Path(path),
                       dpi=100)
