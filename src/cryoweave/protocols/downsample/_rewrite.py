"""Particle metadata after Fourier cropping: new box and pixel size per optics group.

Pixel size of group g becomes exactly ``old_g · D_g / d`` (the real output size, not a
nominal factor); shifts stay in Å, CTF, coordinates and micrograph pixel size are untouched;
images point to one new stack in row order.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cryoweave.errors import InputError, ParamError
from cryoweave.formats import ParticleTable
from cryoweave.physical import PIXEL_SIZE_A

if TYPE_CHECKING:  # loads on first use: light commands do not need it
    pass

# how to supply a missing pixel size to a protocol run (run-protocol / workflow params)
IMPORT_FIX = ("import the particles again with the params key 'pixel_size_a' (the pixel size "
              "of the images in Å)")
# RELION 3.0 per-particle optics that would contradict the new rlnImagePixelSize
STALE_OPTICS_LABELS = ("rlnDetectorPixelSize", "rlnMagnification")


def stack_name(box_px: int) -> str:
    return f"particles.{box_px}.mrcs"


def star_name(box_px: int) -> str:
    return f"particles.{box_px}.star"


def target_box(table: ParticleTable, box_px: int | None, pixel_size_a: float | None,
               fix: str = IMPORT_FIX) -> int:
    """The output box: ``box_px``, or the even box closest to reaching ``pixel_size_a``."""
    boxes = table.optics["box_px"]
    if boxes.isna().any():
        raise InputError(f"{table.source}: the image size of some optics groups is unknown")
    if box_px is None and pixel_size_a is None:
        raise ParamError("give box_px (-D) or a target pixel_size_a")
    if box_px is None:
        candidates = set()
        require_pixel_sizes(table, fix)
        for box, pixel in zip(boxes, table.optics["pixel_size_a"], strict=True):
            candidates.add(2 * max(1, round(float(box) * float(pixel) / pixel_size_a / 2)))
        if len(candidates) != 1:
            raise ParamError(f"pixel_size_a={pixel_size_a} gives different boxes "
                             f"{sorted(candidates)} for the optics groups; give box_px instead")
        box_px = candidates.pop()
    problems = []
    if box_px % 2:
        problems.append(f"box_px={box_px} is odd; RELION needs even boxes: use {box_px + 1} "
                        f"or {box_px - 1}")
    largest_allowed = int(boxes.min())
    if box_px > largest_allowed:
        problems.append(f"box_px={box_px} exceeds the input box {largest_allowed}; choose an "
                        f"even value ≤ {largest_allowed}")
    if box_px < 2:
        problems.append(f"box_px={box_px} is too small; choose an even value ≥ 2")
    if problems:
        raise ParamError(problems)
    return box_px


def require_pixel_sizes(table: ParticleTable, fix: str = IMPORT_FIX) -> None:
    """InputError when an optics group's pixel size is missing or out of range.

    ``fix`` says how to supply it where the request came from (a CLI option, a params key).
    """
    import pandas as pd

    pixel = pd.to_numeric(table.optics["pixel_size_a"], errors="coerce").astype(np.float64)
    bad = [int(g) for g, p in zip(table.optics["group_id"], pixel, strict=True)
           if not PIXEL_SIZE_A.contains(p)]
    if bad:
        source = table.source or "the particle set"
        raise InputError(f"{source}: the pixel size of optics group(s) {bad} is missing or out "
                         f"of range (expected {PIXEL_SIZE_A.describe()}); {fix}")


def downsampled_table(table: ParticleTable, box_px: int, stack_path: Path,
                      fix: str = IMPORT_FIX) -> ParticleTable:
    """The table describing ``stack_path`` (row i = image i) at ``box_px``."""
    require_pixel_sizes(table, fix)
    optics = table.optics.copy()
    optics["pixel_size_a"] = [float(p) * float(b) / box_px
                              for p, b in zip(optics["pixel_size_a"], optics["box_px"],
                                              strict=True)]
    optics["box_px"] = box_px
    optics = optics.drop(columns=[c for c in STALE_OPTICS_LABELS if c in optics])
    particles = table.particles.copy()
    particles["image_path"] = str(stack_path)
    particles["image_index"] = np.arange(len(particles), dtype=np.int64)
    labels = [lb for lb in table.particle_labels if lb not in STALE_OPTICS_LABELS]
    optics_labels = [lb for lb in table.optics_labels if lb not in STALE_OPTICS_LABELS]
    return ParticleTable(particles, optics, labels, optics_labels, "3.1", 6, stack_path)


def scale_factors(table: ParticleTable, box_px: int) -> dict[int, float]:
    """Per optics group, the factor d/D applied to pixel-valued quantities."""
    return {int(g): box_px / float(b) for g, b in zip(table.optics["group_id"],
                                                     table.optics["box_px"], strict=True)}


def describe_change(table: ParticleTable, out: ParticleTable) -> list[str]:
    lines = []
    for (_, before), (_, after) in zip(table.optics.iterrows(), out.optics.iterrows(),
                                       strict=True):
        lines.append(f"optics group {int(before['group_id'])}: {int(before['box_px'])} px at "
                     f"{before['pixel_size_a']:.4f} Å → {int(after['box_px'])} px at "
                     f"{after['pixel_size_a']:.4f} Å")
    return lines


def is_close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9)
