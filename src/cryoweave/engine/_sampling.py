"""Even angular sampling: projection directions on the sphere and in-plane angles.

Directions come from a Fibonacci (golden-spiral) lattice with m = round(4π / step²) points
(step in radians) on the whole sphere, so each point covers ≈ step² steradians and nearest
neighbours are ≈ step apart (0.87–1.0 step; every direction lies within ≈ 0.77 step of a
sample). The lattice is deterministic: the same step gives the same points. Restriction to a
symmetry group's asymmetric unit (`in_asymmetric_unit`) and to a tilt range filters that
whole-sphere set, so the spacing stays the same everywhere.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy

from ._symmetry import in_asymmetric_unit


def _check_step(step_deg: float) -> float:
    step = float(step_deg)
    if not 0 < step <= 180:
        raise ValueError(f"step_deg={step_deg} must be in (0, 180] degrees (e.g. 7.5)")
    return step


def fibonacci_directions(n_points: int, *, xp: ModuleType = numpy) -> Any:
    """`n_points` unit vectors `(m, 3)` float64 spread evenly over the sphere (golden spiral)."""
    if n_points < 1:
        raise ValueError(f"n_points={n_points} must be at least 1")
    i = xp.arange(n_points, dtype=xp.float64)
    z = 1.0 - (2.0 * i + 1.0) / n_points
    phi = i * (numpy.pi * (3.0 - 5.0**0.5))
    r = xp.sqrt(xp.clip(1.0 - z * z, 0.0, None))
    return xp.stack([r * xp.cos(phi), r * xp.sin(phi), z], axis=-1)


def sphere_sampling(
    step_deg: float,
    *,
    symmetry: str = "c1",
    min_tilt_deg: float = 0.0,
    max_tilt_deg: float = 180.0,
    xp: ModuleType = numpy,
) -> tuple[Any, Any]:
    """Projection directions with spacing ≈ `step_deg`, as (rot_deg, tilt_deg) float64 arrays.

    Keeps the points of the whole-sphere lattice (module notes) that lie in the asymmetric unit
    of `symmetry` (boundaries included) and have min_tilt_deg ≤ tilt ≤ max_tilt_deg. rot is in
    (−180, 180], tilt in [0, 180]; the direction of (rot, tilt) is A's third row
    (cos rot sin tilt, sin rot sin tilt, cos tilt).
    """
    step = _check_step(step_deg)
    if not 0.0 <= min_tilt_deg <= max_tilt_deg <= 180.0:
        raise ValueError(
            f"tilt range [{min_tilt_deg}, {max_tilt_deg}] must satisfy 0 ≤ min ≤ max ≤ 180 degrees"
        )
    n_points = max(1, round(4.0 * numpy.pi / numpy.deg2rad(step) ** 2))
    directions = fibonacci_directions(n_points, xp=xp)
    tilt = xp.rad2deg(xp.arccos(xp.clip(directions[:, 2], -1.0, 1.0)))
    rot = xp.rad2deg(xp.arctan2(directions[:, 1], directions[:, 0]))
    keep = (tilt >= min_tilt_deg) & (tilt <= max_tilt_deg)
    keep &= in_asymmetric_unit(directions, symmetry)
    return rot[keep], tilt[keep]


def psi_sampling(step_deg: float, *, xp: ModuleType = numpy) -> Any:
    """In-plane angles 0, s, 2s, … < 360 (degrees, float64) with s = 360 / round(360 / step)."""
    step = _check_step(step_deg)
    count = max(1, round(360.0 / step))
    return xp.arange(count, dtype=xp.float64) * (360.0 / count)


def orientation_grid(
    step_deg: float,
    *,
    symmetry: str = "c1",
    psi_step_deg: float | None = None,
    min_tilt_deg: float = 0.0,
    max_tilt_deg: float = 180.0,
    xp: ModuleType = numpy,
) -> tuple[Any, Any, Any]:
    """All (rot, tilt, psi) combinations (degrees, flat float64 arrays) of `sphere_sampling` and
    `psi_sampling` (psi step defaults to `step_deg`)."""
    rot, tilt = sphere_sampling(step_deg, symmetry=symmetry, min_tilt_deg=min_tilt_deg,
                                max_tilt_deg=max_tilt_deg, xp=xp)
    psi = psi_sampling(step_deg if psi_step_deg is None else psi_step_deg, xp=xp)
    n_dir, n_psi = rot.shape[0], psi.shape[0]
    return (xp.repeat(rot, n_psi), xp.repeat(tilt, n_psi), xp.tile(psi, n_dir))
