"""One item of a set as a small PNG (a row of a set table): particle, micrograph or map."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryoweave.formats import read_image, read_images, read_volume
from cryoweave.viewers._images import central_slices, save_png, thumbnail


def item_thumbnail(kind: str, item: Mapping[str, Any], path: str | Path,
                   max_px: int = 128) -> Path | None:
    """Write a contrast-stretched thumbnail (longer side ≤ ``max_px``) of one item of a
    ``kind`` set (its typed columns in ``item``) to ``path``; None for kinds without images."""
    if kind == "particles" and item.get("image_path"):
        image = read_images(item["image_path"], [int(item.get("image_index") or 0)])[0]
    elif kind == "micrographs" and item.get("path"):
        image = read_image(item["path"])[0]
    elif kind == "volumes" and item.get("path"):
        image = central_slices(read_volume(item["path"])[0])
    else:
        return None
    return save_png(Path(path), thumbnail(image, max_px))
