"""Fourier shell (ring) correlation and resolution estimates.

FSC(shell) = Σ Re(F1·F2*) / sqrt(Σ|F1|² · Σ|F2|²) over the Fourier voxels of a shell, shells by
the rounded radius in Fourier pixels, r = round(N · |f|) with f the digital frequency (cycles
per pixel); shells 0 … N // 2 are reported (the corners beyond are left out). Sums run over the
full spectrum (the half spectrum with its mirrored columns counted twice). Works for cubic
maps (FSC) and square images (FRC).

Resolution at a threshold (0.143 gold standard, 0.5 Xmipp's default) is reported two ways:
"first_below" (Xmipp): the frequency of the first shell (after shell 0) whose FSC is below the
threshold; "interpolated": where the straight line between the last shell above and that shell
crosses the threshold. Both give 1/frequency in Å.

A curve of maps low-passed with a hard cut-off (both halves the same) is not information
beyond it: the halves share the cut-off and correlate there whatever the data.
`FscCurve.limited_to(cutoff_a)` zeroes the shells beyond the cut-off and makes every
resolution at least `cutoff_a`; `limited_by(threshold)` says when a resolution is that bound
("filter") or the highest shell's ("nyquist") rather than a crossing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy

from ._backend import array_namespace, to_host
from ._fft import fft_frequencies, rfftn


@dataclasses.dataclass(frozen=True)
class FscCurve:
    """Per-shell FSC: shell radius (Fourier px), frequency (1/Å), FSC value, voxel count."""

    shell_px: numpy.ndarray
    frequency_per_a: numpy.ndarray
    values: numpy.ndarray
    counts: numpy.ndarray
    filter_resolution_a: float | None = None  # hard low-pass both maps share (Å), if any

    def _crossing_a(self, threshold: float, method: str) -> float:
        if method not in ("interpolated", "first_below"):
            raise ValueError(f"method={method!r} must be 'interpolated' or 'first_below'")
        below = numpy.nonzero(self.values[1:] < threshold)[0]
        if below.size == 0:
            return float(1.0 / self.frequency_per_a[-1])
        i = int(below[0]) + 1
        if method == "first_below":
            return float(1.0 / self.frequency_per_a[i])
        v0, v1 = self.values[i - 1], self.values[i]
        f0, f1 = self.frequency_per_a[i - 1], self.frequency_per_a[i]
        f = f0 + (v0 - threshold) / (v0 - v1) * (f1 - f0)
        return float(1.0 / f)

    def resolution_a(self, threshold: float = 0.143, *, method: str = "interpolated") -> float:
        """Resolution (Å) where the FSC falls below `threshold` (module notes for `method`:
        'interpolated' or 'first_below'). When it never falls below, the highest shell's;
        never finer than `filter_resolution_a`."""
        value = self._crossing_a(threshold, method)
        if self.filter_resolution_a is not None:
            value = max(value, float(self.filter_resolution_a))
        return value

    def limited_by(self, threshold: float = 0.143, *, method: str = "interpolated"
                   ) -> str | None:
        """"filter" when the resolution at `threshold` is the filter's cut-off, "nyquist"
        when the FSC stays above `threshold` up to the last shell, else None (a crossing)."""
        crossing = self._crossing_a(threshold, method)
        if self.filter_resolution_a is not None and crossing <= self.filter_resolution_a:
            return "filter"
        if not (self.values[1:] < threshold).any():
            return "nyquist"
        return None

    def limited_to(self, cutoff_a: float | None) -> FscCurve:
        """This curve for maps low-passed at `cutoff_a` (Å, hard cut-off): shells beyond it
        set to 0 and every resolution at least `cutoff_a`. None: unchanged."""
        if cutoff_a is None:
            return self
        if not cutoff_a > 0:
            raise ValueError(f"cutoff_a={cutoff_a} must be positive (Å)")
        beyond = self.frequency_per_a > 1.0 / cutoff_a + 1e-12
        limit = float(cutoff_a) if self.filter_resolution_a is None \
            else max(float(cutoff_a), self.filter_resolution_a)
        return dataclasses.replace(self, values=numpy.where(beyond, 0.0, self.values),
                                   filter_resolution_a=limit)


def _shell_index(shape: tuple[int, ...], xp: Any) -> Any:
    n = shape[-1]
    axes = [fft_frequencies(size, xp) for size in shape[:-1]]
    axes.append(fft_frequencies(n, xp, rfft=True))
    grids = xp.meshgrid(*axes, indexing="ij")
    radius = xp.sqrt(sum(g * g for g in grids)) * n
    return xp.rint(radius).astype(xp.int64)


def fsc(map1: Any, map2: Any, *, mask: Any | None = None, pixel_size_a: float = 1.0) -> FscCurve:
    """FSC of two maps `(N, N, N)` (or FRC of two images `(N, N)`); `mask` multiplies both.

    Returns an `FscCurve` on the host (NumPy), shells 0 … N // 2, frequency = shell / (N·Å).
    """
    xp = array_namespace(map1, map2)
    if map1.shape != map2.shape or map1.ndim not in (2, 3) or len(set(map1.shape)) != 1:
        raise ValueError(
            f"fsc needs two square images or cubic maps of the same shape; got "
            f"{tuple(map1.shape)} and {tuple(map2.shape)}"
        )
    if not pixel_size_a > 0:
        raise ValueError(f"pixel_size_a={pixel_size_a} must be positive (Å)")
    a = xp.asarray(map1, dtype=xp.float64)
    b = xp.asarray(map2, dtype=xp.float64)
    if mask is not None:
        a, b = a * mask, b * mask
    n = a.shape[-1]
    f1, f2 = rfftn(a, ndim=a.ndim), rfftn(b, ndim=a.ndim)
    columns = xp.full(n // 2 + 1, 2.0)
    columns[0] = 1.0
    if n % 2 == 0:
        columns[-1] = 1.0
    shells = _shell_index(a.shape, xp).ravel()
    n_shells = n // 2 + 1
    keep = shells < n_shells
    shells = shells[keep]
    weight = xp.broadcast_to(columns, f1.shape).ravel()[keep]
    f1, f2 = f1.ravel()[keep], f2.ravel()[keep]
    cross = xp.bincount(shells, weights=weight * (f1 * xp.conj(f2)).real, minlength=n_shells)
    p1 = xp.bincount(shells, weights=weight * xp.abs(f1) ** 2, minlength=n_shells)
    p2 = xp.bincount(shells, weights=weight * xp.abs(f2) ** 2, minlength=n_shells)
    counts = xp.bincount(shells, weights=weight, minlength=n_shells)
    denominator = xp.sqrt(p1 * p2)
    values = xp.where(denominator > 0, cross / xp.where(denominator > 0, denominator, 1.0), 0.0)
    shell_px = numpy.arange(n_shells)
    return FscCurve(shell_px, shell_px / (n * pixel_size_a), to_host(values),
                    to_host(counts).astype(numpy.int64))
