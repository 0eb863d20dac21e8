"""Per-particle weights (spec: "The iteration", step 5): the product of the enabled terms.

- CC percentile: within 50 equal-count defocus groups, the percentile of the particle's NCC;
  weight = w_min + percentile·(1 − w_min).
- Angular stability: exp(−d²/2σ²), d the symmetry-aware angular change since the previous
  iteration, σ the iteration's angular step.
- SSNR: the particle's signal-to-noise estimate from its NCC, s = NCC²/(1 − NCC²) (the SNR of
  an image whose noiseless part correlates perfectly with the model), relative to the median
  particle: min(1, s / median s).
- Continuous: the percentile of the NCC among all particles (one group), w_min-floored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cryoweave.engine import symmetry_aware_angular_distance

DEFOCUS_GROUPS = 50


@dataclass(frozen=True)
class WeightOptions:
    cc_percentile: bool = True
    angular_stability: bool = False
    ssnr: bool = False
    continuous: bool = False
    min_cc_weight: float = 0.1


def defocus_groups(defocus_a: np.ndarray, n_groups: int = DEFOCUS_GROUPS) -> np.ndarray:
    """Equal-count defocus groups 0…n_groups−1 (fewer when there are fewer particles)."""
    n = len(defocus_a)
    order = np.argsort(defocus_a, kind="stable")
    groups = np.empty(n, np.int64)
    groups[order] = (np.arange(n) * min(n_groups, max(n, 1))) // max(n, 1)
    return groups


def percentiles(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """The rank-based percentile (0…1) of each value within its group."""
    out = np.zeros(len(values))
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        if len(members) == 1:
            out[members] = 1.0
            continue
        ranks = np.argsort(np.argsort(values[members], kind="stable"), kind="stable")
        out[members] = ranks / (len(members) - 1)
    return out


def angular_changes_deg(previous: np.ndarray, current: np.ndarray, symmetry: str) -> np.ndarray:
    """Symmetry-aware angle (degrees) between previous and current rotation matrices."""
    return np.asarray(symmetry_aware_angular_distance(previous, current, symmetry), np.float64)


def compute_weights(score: np.ndarray, defocus_a: np.ndarray, options: WeightOptions, *,
                    angular_change_deg: np.ndarray | None = None,
                    angular_step_deg: float = 5.0) -> dict[str, np.ndarray]:
    """Weights and their terms, each (n,), for the particles with finite scores."""
    n = len(score)
    groups = defocus_groups(defocus_a)
    percentile = percentiles(score, groups)
    weight = np.ones(n)
    floor = options.min_cc_weight
    if options.cc_percentile:
        weight *= floor + percentile * (1 - floor)
    if options.angular_stability and angular_change_deg is not None:
        weight *= np.exp(-(angular_change_deg**2) / (2 * angular_step_deg**2))
    if options.ssnr:
        clipped = np.clip(score, 0.0, 0.999)
        snr = clipped**2 / (1 - clipped**2)
        median = float(np.median(snr)) or 1.0
        weight *= np.minimum(1.0, snr / median)
    if options.continuous:
        weight *= floor + percentiles(score, np.zeros(n, np.int64)) * (1 - floor)
    return {"weight": weight, "percentile": percentile, "defocus_group": groups}
