"""Plots: FSC curves, resolution per iteration and angular distributions (PNG)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cryoweave.viewers._images import _pyplot, save_figure


def plot_fsc(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path, *,
             thresholds: Sequence[float] = (0.143, 0.5), title: str = "") -> Path:
    """FSC against spatial frequency (1/Å), one line per curve, threshold lines dashed.

    ``curves`` maps a label to (frequency_per_a, fsc) arrays.
    """
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, (frequency, values) in curves.items():
        ax.plot(frequency, values, label=label, linewidth=1.4)
    for threshold in thresholds:
        ax.axhline(threshold, color="grey", linestyle="--", linewidth=0.8)
        ax.text(0.0, threshold, f" {threshold}", va="bottom", fontsize=7, color="grey")
    ax.set_xlabel("spatial frequency (1/Å)")
    ax.set_ylabel("FSC")
    ax.set_ylim(-0.1, 1.05)
    frequencies = [f for f, _ in curves.values() if len(f)]
    if frequencies:
        top = max(float(np.max(f)) for f in frequencies)
        ticks = np.linspace(0, top, 6)[1:]
        ax.set_xticks(ticks, [f"{t:.3f}\n{1 / t:.1f} Å" for t in ticks], fontsize=7)
    ax.grid(alpha=0.3)
    return _finish(figure, ax, path, legend=len(curves) > 1, title=title)


def plot_series(values: Mapping[str, Sequence[float]], path: Path, *, xlabel: str,
                ylabel: str, title: str = "", x: Sequence[float] | None = None) -> Path:
    """Lines of values against ``x`` (default: their 1-based index), e.g. resolution per
    iteration."""
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(5.6, 3.8))
    for label, series in values.items():
        xs = list(x)[:len(series)] if x is not None else range(1, len(series) + 1)
        ax.plot(xs, series, marker="o", label=label)
    if x is not None and all(float(v).is_integer() for v in x):
        ax.set_xticks(list(x))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return _finish(figure, ax, path, legend=len(values) > 1, title=title)


def plot_resolution_per_iteration(records: Sequence[Mapping], path: Path, *,
                                  title: str = "") -> Path | None:
    """The resolution (Å) of each refinement iteration's FSC record (``iteration``,
    ``resolution_a`` at ``resolution_criterion``, ``resolution_0143_a``); None when no
    record has an iteration."""
    iterations = sorted((r for r in records if "iteration" in r and "resolution_a" in r),
                        key=lambda r: r["iteration"])
    if not iterations:
        return None
    criterion = float(iterations[-1].get("resolution_criterion", 0.143))
    series = {f"FSC {criterion:g}": [r["resolution_a"] for r in iterations]}
    if criterion != 0.143 and all("resolution_0143_a" in r for r in iterations):
        series["FSC 0.143"] = [r["resolution_0143_a"] for r in iterations]
    return plot_series(series, path, xlabel="iteration", ylabel="resolution (Å)", title=title,
                       x=[int(r["iteration"]) for r in iterations])


def plot_angular_distribution(rot_deg: np.ndarray, tilt_deg: np.ndarray, path: Path, *,
                              bin_deg: float = 5.0, title: str = "") -> Path:
    """Particles per (rot, tilt) bin of ``bin_deg`` degrees: rot in [-180, 180) across, tilt
    in [0, 180] down, on a log colour scale (empty bins white)."""
    from matplotlib.colors import LogNorm

    plt = _pyplot()
    rot = (np.asarray(rot_deg, np.float64) + 180.0) % 360.0 - 180.0
    tilt = np.clip(np.asarray(tilt_deg, np.float64), 0.0, 180.0)
    counts, rot_edges, tilt_edges = np.histogram2d(
        rot, tilt, bins=(round(360 / bin_deg), round(180 / bin_deg)),
        range=((-180.0, 180.0), (0.0, 180.0)))
    figure, ax = plt.subplots(figsize=(6.4, 3.8))
    shown = np.ma.masked_equal(counts.T, 0)
    image = ax.pcolormesh(rot_edges, tilt_edges, shown, cmap="viridis",
                          norm=LogNorm(vmin=1, vmax=max(float(counts.max()), 1.0)))
    figure.colorbar(image, ax=ax, label=f"particles per {bin_deg:g}° × {bin_deg:g}° bin")
    ax.set_xlim(-180, 180)
    ax.set_ylim(180, 0)
    ax.set_xticks(np.arange(-180, 181, 60))
    ax.set_yticks(np.arange(0, 181, 30))
    ax.set_xlabel("rot (°)")
    ax.set_ylabel("tilt (°)")
    return _finish(figure, ax, path, legend=False, title=title)


def _finish(figure, ax, path: Path, *, legend: bool, title: str) -> Path:  # type: ignore[no-untyped-def]
    """Legend, title, layout; save to ``path`` (PNG) and release the figure."""
    if legend:
        ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    figure.tight_layout()
    return save_figure(figure, path, dpi=120)
