"""Checks of an imported particle table against its stacks, shared by ImportParticles and
Downsample (its CLI file mode): stacks complete, square, one box per optics group, pixel sizes
present. (Downsample's own ``require_pixel_sizes`` also checks the range, with its message.)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cryoweave.errors import InputError
from cryoweave.formats import ParticleTable, read_info

if TYPE_CHECKING:  # loads on first use: light commands do not need it
    pass


def require_pixel_sizes(table: ParticleTable, source: str | Path, fix: str) -> None:
    """InputError naming the label that is missing when an optics group has no pixel size."""
    missing = table.optics.loc[table.optics["pixel_size_a"].isna(), "group_id"].tolist()
    if missing:
        raise InputError(
            f"{source}: no pixel size for optics group(s) {missing}: the file has neither "
            "rlnImagePixelSize (data_optics) nor rlnDetectorPixelSize with rlnMagnification "
            f"(nor a voxel size in the stack header); {fix}")


def verify_stacks(table: ParticleTable, source: str | Path) -> None:
    """Every stack exists, is complete, square, of one box per optics group, with the images."""
    import pandas as pd

    parts = table.particles
    missing = sorted(p for p in pd.unique(parts["image_path"]) if not Path(p).is_file())
    if missing:
        shown = ", ".join(missing[:3]) + (" …" if len(missing) > 3 else "")
        raise InputError(f"{source}: {len(missing)} referenced image stack(s) not found: "
                         f"{shown}; pass datadir (the folder the paths are relative to) or "
                         "strip_prefix")
    boxes: dict[int, int] = {}
    by_stack = parts.groupby("image_path")["image_index"]
    needed, lowest = by_stack.max(), by_stack.min()
    groups = parts.groupby("image_path")["optics_group"].first()
    for stack_path, max_index in needed.items():
        info = read_info(stack_path)
        _, ny, nx = info.shape
        if ny != nx:
            raise InputError(f"{stack_path}: images are {nx}×{ny}; particles must be square")
        if lowest[stack_path] < 0:
            row = int(((parts["image_path"] == stack_path) & (parts["image_index"] < 0)).idxmax())
            raise InputError(f"{source}: row {row + 1} refers to image "
                             f"{lowest[stack_path] + 1} (0-based {lowest[stack_path]}) of "
                             f"{stack_path}; image numbers start at 1 (0-based indices at 0)")
        if max_index >= info.n_images:
            raise InputError(f"{source}: refers to image {max_index + 1} of {stack_path}, "
                             f"which holds only {info.n_images} images")
        group = int(groups[stack_path])
        if boxes.setdefault(group, nx) != nx:
            raise InputError(f"{source}: optics group {group} mixes box sizes {boxes[group]} "
                             f"and {nx} px ({stack_path}); split it into separate groups")
    for group, box in boxes.items():
        mask = table.optics["group_id"] == group
        declared = table.optics.loc[mask, "box_px"]
        if declared.notna().all() and (declared != box).any():
            raise InputError(f"{source}: optics group {group} declares rlnImageSize "
                             f"{int(declared.iloc[0])} but its stacks are {box} px")
        table.optics.loc[mask, "box_px"] = box
