"""The one symmetry check of every protocol parameter named ``symmetry``."""

from __future__ import annotations

from cryoweave.engine import MAX_AXIAL_ORDER, normalize_symmetry_name

SYMMETRY_NAMES = f"c1, cN and dN with N ≤ {MAX_AXIAL_ORDER}, t, o, i (= i2), i1–i4"


def check_symmetry(name: str) -> str:
    """The name in lower case ('C7' -> 'c7'); ValueError naming the value, the accepted names
    and the limit on N otherwise (for a pydantic field validator)."""
    normalize_symmetry_name(name)  # its message names the value
    return name.lower()
