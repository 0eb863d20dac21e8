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


def save_figure(figure, path: Path, *, dpi: int = 110) -> Path:  # type: ignore[no-untyped-def]
    """Save a matplotlib figure as a PNG at ``dpi`` and release it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    _pyplot().close(figure)
    return path


def save_png(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    _pyplot().imsave(path, image, cmap="gray", vmin=0, vmax=1, origin="upper")
    return path


def contact_sheet_figure(images: Sequence[np.ndarray], labels: Sequence[str], *,
                         columns: int = 6, title: str = "",
                         rings_pixel_size_a: float | None = None):  # type: ignore[no-untyped-def]
    """A grid of pictures with their labels; power spectra get resolution rings when
    ``rings_pixel_size_a`` (the pixel size of the spectra's tiles) is given."""
    plt = _pyplot()
    columns = max(1, min(columns, len(images)))
    rows = max(1, -(-len(images) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.8 * rows + 0.4),
                                squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, label in zip(axes.ravel(), images, labels, strict=False):
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        ax.set_title(label, fontsize=7)
        if rings_pixel_size_a:
            resolution_rings(ax, image.shape[0], rings_pixel_size_a, fontsize=6)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def contact_sheet(images: Sequence[np.ndarray], labels: Sequence[str], path: Path, *,
                  columns: int = 6, title: str = "",
                  rings_pixel_size_a: float | None = None) -> Path:
    """:func:`contact_sheet_figure` as one PNG."""
    return save_figure(contact_sheet_figure(images, labels, columns=columns, title=title,
                                            rings_pixel_size_a=rings_pixel_size_a), path)


RING_RESOLUTIONS_A = (50.0, 30.0, 20.0, 15.0, 10.0, 8.0, 6.0, 5.0, 4.0, 3.5, 3.0, 2.5, 2.0,
                      1.5, 1.2, 1.0)


def ring_resolutions_a(tile_px: int, pixel_size_a: float, count: int = 4) -> list[float]:
    """Up to ``count`` round resolutions (Å) spread between 1/8 of the way to Nyquist and
    Nyquist (2·pixel) for a spectrum of ``tile_px`` pixels."""
    nyquist = 2 * pixel_size_a
    coarse = tile_px * pixel_size_a / (tile_px / 16)  # radius tile/16
    inside = [r for r in RING_RESOLUTIONS_A if nyquist <= r <= coarse]
    if len(inside) <= count:
        return inside
    picks = np.linspace(0, len(inside) - 1, count).round().astype(int)
    return [inside[i] for i in sorted(set(picks.tolist()))]


def resolution_rings(ax, tile_px: int, pixel_size_a: float, *,  # type: ignore[no-untyped-def]
                     fontsize: int = 7) -> list[str]:
    """Circles at round resolutions on a centred spectrum of ``tile_px`` (centre tile//2),
    each labelled in Å; the ring of resolution d has radius tile·pixel/d pixels. Returns the
    labels."""
    from matplotlib.patches import Circle

    centre = tile_px // 2
    labels = []
    for resolution in ring_resolutions_a(tile_px, pixel_size_a):
        radius = tile_px * pixel_size_a / resolution
        ax.add_patch(Circle((centre, centre), radius, fill=False, color="#ffcc33",
                            linewidth=0.7, alpha=0.8))
        label = f"{resolution:g} Å"
        angle = np.deg2rad(-45)
        ax.text(centre + radius * np.cos(angle), centre + radius * np.sin(angle), label,
                color="#ffcc33", fontsize=fontsize, ha="left", va="bottom",
                bbox={"facecolor": "black", "alpha": 0.6, "pad": 1, "edgecolor": "none"})
        labels.append(label)
    return labels


def spectrum_figure(spectrum: np.ndarray, pixel_size_a: float, *,
                    title: str):  # type: ignore[no-untyped-def]
    """A displayed power spectrum (``show_spectrum`` output) with labelled resolution rings."""
    plt = _pyplot()
    size = max(spectrum.shape[0], 256) / 100
    figure, ax = plt.subplots(figsize=(size + 0.4, size + 0.7), dpi=100)
    ax.imshow(spectrum, cmap="gray", vmin=0, vmax=1)
    ax.axis("off")
    resolution_rings(ax, spectrum.shape[0], pixel_size_a)
    ax.set_title(title, fontsize=9)
    figure.tight_layout()
    return figure


def gallery_figure(images: np.ndarray, ids: Sequence[int], *, title: str,
                   columns: int = 10):  # type: ignore[no-untyped-def]
    """Particle images ``(n, y, x)`` tiled (:func:`montage`), each numbered by its id; tiles
    are shown at least 80 px."""
    plt = _pyplot()
    n, height, width = images.shape
    columns = max(1, min(columns, n))
    picture = montage(images, columns)
    scale = max(1.0, 80 / max(height, width))
    figure, ax = plt.subplots(figsize=(picture.shape[1] * scale / 100 + 0.2,
                                       picture.shape[0] * scale / 100 + 0.5), dpi=100)
    ax.imshow(picture, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    for i, item_id in enumerate(ids):
        r, c = divmod(i, columns)
        ax.text(c * (width + 2) + 1, r * (height + 2) + 1, str(int(item_id)), color="#ffcc33",
                fontsize=7, ha="left", va="top",
                bbox={"facecolor": "black", "alpha": 0.5, "pad": 0.5, "edgecolor": "none"})
    ax.set_title(title, fontsize=9)
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01,
                           top=1 - 0.4 / (picture.shape[0] * scale / 100 + 0.5))
    return figure


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
