"""Plots: FSC curves and resolution per iteration (PNG)."""

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
                ylabel: str, title: str = "") -> Path:
    """Lines of values against their index (e.g. resolution per iteration)."""
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(5.6, 3.8))
    for label, series in values.items():
        ax.plot(range(1, len(series) + 1), series, marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return _finish(figure, ax, path, legend=len(values) > 1, title=title)


def _finish(figure, ax, path: Path, *, legend: bool, title: str) -> Path:  # type: ignore[no-untyped-def]
    """Legend, title, layout; save to ``path`` (PNG) and release the figure."""
    if legend:
        ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    figure.tight_layout()
    return save_figure(figure, path, dpi=120)
