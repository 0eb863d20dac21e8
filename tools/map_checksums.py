"""Checksums of every map a project's runs wrote, to compare two projects bit for bit.

    python tools/map_checksums.py PROJECT > sums.txt

One line per MRC file under ``PROJECT/Runs`` (sorted): the last three path parts and the first
12 hex digits of the sha256 of the map's voxel data. Used to check that a refactoring leaves
``cryoweave demo``'s maps unchanged: run the demo on both commits, then ``diff`` the outputs.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

from cryoweave.formats import read_volume


def checksums(root: Path) -> list[str]:
    lines = []
    for path in sorted(root.rglob("*.mrc")):
        if "Runs" not in path.relative_to(root).parts:
            continue
        volume, _ = read_volume(path)
        digest = hashlib.sha256(np.ascontiguousarray(volume).tobytes()).hexdigest()[:12]
        lines.append(f"{'/'.join(path.relative_to(root).parts[-3:])} {digest}")
    return lines


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        sys.exit("usage: python tools/map_checksums.py PROJECT (a project folder)")
    print("\n".join(checksums(Path(sys.argv[1]))))
