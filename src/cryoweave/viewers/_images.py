"""Pictures of images: thumbnails, power spectra, contact sheets, galleries, volume slices.

Everything renders to PNG files (matplotlib's Agg backend, imported when first needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cryoweave.engine import fourier_downsample


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def stretch(image: np.ndarray, low_pct: float = 1.0, high_pct: float = 99.0) -> np.ndarray:
    """``image`` scaled to [0, 1] between two percentiles (robust to hot pixels)."""
    lo, hi = np.percentile(image, [low_pct, high_pct])
    if hi <= lo:
        return np.zeros_like(image, dtype=np.float32)
    return np.clip((image - lo) / (hi - lo), 0, 1).astype(np.float32)


def thumbnail(image: np.ndarray, max_px: int = 512) -> np.ndarray:
    """A Fourier-downsampled, contrast-stretched copy whose longer side is at most ``max_px``."""
    factor = max(image.shape) / max_px
    small = fourier_downsample(image.astype(np.float32), factor)[0] if factor > 1 else image
    return stretch(np.asarray(small))


def power_spectrum(image: np.ndarray, tile_px: int = 512) -> np.ndarray:
    """log(1 + averaged periodogram) of half-overlapping Hann-windowed tiles, centred at
    ``(tile//2, tile//2)``, float64 ``(tile, tile)`` (stretch it to show it)."""
    tile = min(tile_px, *image.shape)
    step = tile // 2
    total = np.zeros((tile, tile), np.float64)
    count = 0
    window = np.outer(np.hanning(tile), np.hanning(tile))
    for y in range(0, image.shape[0] - tile + 1, step):
        for x in range(0, image.shape[1] - tile + 1, step):
            patch = image[y:y + tile, x:x + tile]
            total += np.abs(np.fft.fft2((patch - patch.mean()) * window)) ** 2
            count += 1
    return np.fft.fftshift(np.log1p(total / max(count, 1)))


def show_spectrum(spectrum: np.ndarray) -> np.ndarray:
    """A power spectrum stretched for display (the bright centre clipped)."""
    return stretch(spectrum, 2, 99.8)


def save_png(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    _pyplot().imsave(path, image, cmap="gray", vmin=0, vmax=1, origin="upper")
    return path


def contact_sheet(images: Sequence[np.ndarray], labels: Sequence[str], path: Path, *,
                  columns: int = 6, title: str = "") -> Path:
    """A grid of pictures with their labels, as one PNG."""
    plt = _pyplot()
    columns = max(1, min(columns, len(images)))
    rows = max(1, -(-len(images) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.4 * rows),
                                squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, label in zip(axes.ravel(), images, labels, strict=False):
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        ax.set_title(label, fontsize=7)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def montage(images: np.ndarray, columns: int = 10) -> np.ndarray:
    """Images ``(n, y, x)`` tiled into one picture, each stretched on its own."""
    n, height, width = images.shape
    rows = -(-n // columns)
    out = np.ones((rows * (height + 2), columns * (width + 2)), np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        out[r * (height + 2):r * (height + 2) + height,
            c * (width + 2):c * (width + 2) + width] = stretch(image)
    return out


def central_slices(volume: np.ndarray) -> np.ndarray:
    """The z, y and x central sections of ``(z, y, x)`` side by side, stretched together."""
    z, y, x = (s // 2 for s in volume.shape)
    sections = [volume[z], volume[:, y, :], volume[:, :, x]]
    height = max(s.shape[0] for s in sections)
    joined = np.concatenate([np.pad(s, ((1, 1 + height - s.shape[0]), (1, 1)),
                                    constant_values=np.nan) for s in sections], axis=1)
    finite = np.nan_to_num(joined, nan=float(np.nanmin(joined)))
    return stretch(finite, 0.5, 99.5)
