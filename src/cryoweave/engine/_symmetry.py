"""Point-group symmetry in RELION's orientation (c<n>, d<n>, t, o, i, i1–i4).

Orientations of the symmetry axes (as `relion_refine --sym X --print_symmetry_ops` lists them):

- c<n>: the n-fold axis along z.                    d<n>: plus a 2-fold axis along x.
- t: a 3-fold axis along z and a 2-fold axis along (0, √(2/3), √(1/3)) (in the yz plane).
- o: 4-fold axes along x, y and z (3-folds along the cube diagonals).
- i1, i2: 2-fold axes along x, y and z; a 5-fold axis along (φ, 0, 1) (i1) or (1, 0, φ) (i2),
  φ the golden ratio. i is i2, as in RELION.
- i3, i4: a 5-fold axis along z, a 2-fold axis along y, and a second 5-fold axis along
  (2, 0, −1)/√5 (i3) or (2, 0, 1)/√5 (i4).

An operator R acts on orientations by multiplying on the left of Aᵀ: the orientation A is
equivalent to A·Rᵀ (same projection of a symmetric map), and its projection direction d maps to
R·d. The asymmetric unit of projection directions used here is the Dirichlet (Voronoi) cell of a
reference direction r0 under the group: {d : d·r0 ≥ (R d)·r0 for every R}. With r0 at
(rot = 180/n, tilt = 45°) this is RELION's 0 ≤ rot ≤ 360/n for c<n> and additionally
tilt ≤ 90° for d<n>; for t, o and i it is a polygon of area 4π/|G| around a fixed generic
direction (RELION's unit for those groups has another shape but the same area).
"""

from __future__ import annotations

import bisect
import functools
import re
from types import ModuleType
from typing import Any

import numpy

from ._backend import array_namespace

_GOLDEN = (1.0 + 5.0**0.5) / 2.0
# The largest n of c<n> and d<n>. The largest rings solved by cryo-EM have a few dozen
# subunits (RELION users rarely go past c40); past 100 a typo is far more likely than a
# molecule, and the group's cost (|G| insertions per image) grows with n.
MAX_AXIAL_ORDER = 100
_NAME = re.compile(r"(c|d)([0-9]+)|(t|o|i|i1|i2|i3|i4)")
# RELION names of groups with mirrors or inversion, and i5: not proper rotation groups that a
# chiral molecule can have (or, i5, not an orientation cryoweave implements).
_UNSUPPORTED = re.compile(r"c[ivsh]|c[0-9]+[vh]|d[0-9]+[vh]|dv|dh|td|th|oh|ih|i[1-5]h|i5")
_GROUP_ORDERS = {"t": 12, "o": 24, "i": 60, "i1": 60, "i2": 60, "i3": 60, "i4": 60}
# Generic reference direction for the t/o/i asymmetric units (on no symmetry axis).
_GENERIC_REFERENCE = numpy.array([0.2, 0.15, 0.968])


def _axis_rotation(axis: Any, fold: int) -> numpy.ndarray:
    """Rotation by 360/fold degrees about `axis` (Rodrigues)."""
    u = numpy.asarray(axis, dtype=numpy.float64)
    u = u / numpy.linalg.norm(u)
    angle = 2.0 * numpy.pi / fold
    cross = numpy.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    return numpy.eye(3) + numpy.sin(angle) * cross + (1 - numpy.cos(angle)) * cross @ cross


def _generators(name: str) -> list[numpy.ndarray]:
    z, x, y = (0, 0, 1), (1, 0, 0), (0, 1, 0)
    match = _NAME.fullmatch(name)
    if match and match.group(1):
        n = int(match.group(2))
        gens = [_axis_rotation(z, n)]
        return [*gens, _axis_rotation(x, 2)] if match.group(1) == "d" else gens
    table = {
        "t": [(z, 3), ((0, (2 / 3) ** 0.5, (1 / 3) ** 0.5), 2)],
        "o": [(z, 4), ((1, 1, 1), 3)],
        "i1": [(z, 2), (x, 2), ((_GOLDEN, 0, 1), 5)],
        "i2": [(z, 2), (x, 2), ((1, 0, _GOLDEN), 5)],
        "i3": [(z, 5), (y, 2), ((2, 0, -1), 5)],
        "i4": [(z, 5), (y, 2), ((2, 0, 1), 5)],
    }
    return [_axis_rotation(axis, fold) for axis, fold in table[name]]


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "…"


def _expected(symmetry: Any) -> str:
    return (f"symmetry {_shown(symmetry)} is not a supported point group; expected c<n> or d<n> "
            f"(1 ≤ n ≤ {MAX_AXIAL_ORDER}), t, o, i, i1, i2, i3 or i4 as RELION names them "
            "(e.g. 'c1', 'd7', 'i2')")


def normalize_symmetry_name(symmetry: str) -> str:
    """Canonical name of a point group ('C7' -> 'c7', 'I' -> 'i2'); ValueError otherwise.

    Strict: RELION's names (case-insensitive, no spaces, no leading zeros), orders n of c<n>
    and d<n> from 1 to MAX_AXIAL_ORDER (100). The message names the value, the limit and the
    accepted forms.
    """
    if not isinstance(symmetry, str):
        raise ValueError(_expected(symmetry))
    name = symmetry.lower()
    match = _NAME.fullmatch(name)
    if match is None:
        if _UNSUPPORTED.fullmatch(name):
            raise ValueError(f"{_expected(symmetry)}; groups with mirrors or an inversion "
                             "centre (and i5) are not supported")
        raise ValueError(_expected(symmetry))
    digits = match.group(2)
    if digits is not None:
        if digits.startswith("0"):
            raise ValueError(_expected(symmetry))
        if len(digits) > len(str(MAX_AXIAL_ORDER)) or int(digits) > MAX_AXIAL_ORDER:
            raise ValueError(
                f"symmetry {_shown(symmetry)}: the order n is above the limit of "
                f"{MAX_AXIAL_ORDER} for c<n> and d<n>; use n from 1 to {MAX_AXIAL_ORDER} "
                "(check for a typo)")
    return "i2" if name == "i" else name


def symmetry_order(symmetry: str) -> int:
    """Number of operators of a group: n for c<n>, 2n for d<n>, 12 (t), 24 (o), 60 (i…)."""
    name = normalize_symmetry_name(symmetry)
    if name[0] in "cd" and name[1:].isdigit():
        return int(name[1:]) * (1 if name[0] == "c" else 2)
    return _GROUP_ORDERS[name]


class _Elements:
    """The group elements found so far, with a membership test in O(log |G|).

    Elements are kept sorted by a fixed linear functional of their entries; equal matrices
    (within 1e-8) have keys within 1e-7, so only that window of neighbours is compared.
    """

    _WEIGHTS = numpy.array([[0.31, 0.17, 0.53], [0.71, 0.11, 0.43], [0.23, 0.97, 0.61]])
    _WINDOW = 1e-6

    def __init__(self) -> None:
        self.keys: list[float] = []
        self.matrices: list[numpy.ndarray] = []

    def add_if_new(self, matrix: numpy.ndarray) -> bool:
        key = float((matrix * self._WEIGHTS).sum())
        low = bisect.bisect_left(self.keys, key - self._WINDOW)
        high = bisect.bisect_right(self.keys, key + self._WINDOW)
        if any(numpy.abs(matrix - self.matrices[i]).max() < 1e-8 for i in range(low, high)):
            return False
        self.keys.insert(high, key)
        self.matrices.insert(high, matrix)
        return True


@functools.cache
def _matrices(name: str) -> numpy.ndarray:
    """The closure of the generators, breadth first from the identity (so identity first)."""
    elements = [numpy.eye(3)]
    seen = _Elements()
    seen.add_if_new(elements[0])
    frontier = [numpy.eye(3)]
    generators = _generators(name)
    while frontier:
        new = []
        for g in frontier:
            for h in generators:
                candidate = h @ g
                if seen.add_if_new(candidate):
                    elements.append(candidate)
                    new.append(candidate)
        frontier = new
    out = numpy.array(elements)
    out.setflags(write=False)
    return out


def symmetry_matrices(symmetry: str, *, xp: ModuleType = numpy) -> Any:
    """The rotation operators of a point group, `(|G|, 3, 3)` float64, identity first.

    The set equals RELION's operators for the same group name (see module notes); as a group
    it is closed under products and inverses.
    """
    matrices = _matrices(normalize_symmetry_name(symmetry))
    return xp.asarray(matrices.copy())


def _reference_direction(name: str) -> numpy.ndarray:
    if name[0] in "cd" and name[1:].isdigit():
        rot = numpy.pi / int(name[1:])
        tilt = numpy.pi / 4
        return numpy.array([numpy.cos(rot) * numpy.sin(tilt), numpy.sin(rot) * numpy.sin(tilt),
                            numpy.cos(tilt)])
    return _GENERIC_REFERENCE / numpy.linalg.norm(_GENERIC_REFERENCE)


def in_asymmetric_unit(directions: Any, symmetry: str, *, tolerance: float = 1e-9) -> Any:
    """Whether projection directions lie in the group's asymmetric unit (module notes).

    directions: `(..., 3)` unit vectors (e.g. `projection_direction(A)`). Returns bool `...`.
    Directions on the boundary (within `tolerance` in cosine) count as inside, so a grid that
    samples the boundary keeps both copies of those points.
    """
    xp = array_namespace(directions)
    name = normalize_symmetry_name(symmetry)
    matrices = xp.asarray(_matrices(name))
    reference = xp.asarray(_reference_direction(name))
    d = xp.asarray(directions, dtype=xp.float64)
    own = d @ reference
    images = xp.einsum("kij,...j->...ki", matrices, d) @ reference  # (R d)·r0 for every R
    return own >= xp.max(images, axis=-1) - tolerance


def symmetry_aware_angular_distance(matrices_1: Any, matrices_2: Any, symmetry: str) -> Any:
    """Smallest rotation angle (degrees) between A1 and the orientations equivalent to A2.

    min over R in the group of the angle of A1·(A2·Rᵀ)ᵀ = A1·R·A2ᵀ. Inputs `(..., 3, 3)`,
    broadcast; returns float64 `...` in [0, 180].
    """
    xp = array_namespace(matrices_1, matrices_2)
    ops = xp.asarray(_matrices(normalize_symmetry_name(symmetry)))
    a1 = xp.asarray(matrices_1, dtype=xp.float64)
    a2 = xp.asarray(matrices_2, dtype=xp.float64)
    relative = xp.swapaxes(a2, -1, -2) @ a1  # M = A2ᵀ A1; trace(A1 R A2ᵀ) = Σ R_ij M_ji
    traces = xp.einsum("kij,...ji->...k", ops, relative)
    best = xp.max(traces, axis=-1)
    return xp.rad2deg(xp.arccos(xp.clip((best - 1.0) / 2.0, -1.0, 1.0)))


def symmetry_expand(matrices: Any, symmetry: str) -> Any:
    """All equivalent orientations A·Rᵀ of `(n, 3, 3)` matrices: `(n, |G|, 3, 3)` float64."""
    xp = array_namespace(matrices)
    ops = xp.asarray(_matrices(normalize_symmetry_name(symmetry)))
    return xp.asarray(matrices, dtype=xp.float64)[:, None] @ xp.swapaxes(ops, -1, -2)[None]
