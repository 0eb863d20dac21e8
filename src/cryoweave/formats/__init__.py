"""File formats: MRC (mrcfile), STAR (starfile), cryoSPARC .cs. Pure I/O, no database.

The names below load their module on first use (PEP 562): reading an MRC file does not import
pandas and starfile, and a light command that only names a protocol imports none of them.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "atomic_path": "_atomic",
    "temporary_path": "_atomic",
    "check_file_name": "_checks",
    "MAX_BOX_PX": "_checks",
    "PARTICLE_SUFFIXES": "_dispatch",
    "read_particles": "_dispatch",
    "table_from_stack": "_dispatch",
    "PathResolver": "_paths",
    "MatchedFile": "_paths",
    "match_files": "_paths",
    "pattern_folder": "_paths",
    "format_image_names": "_paths",
    "split_image_names": "_paths",
    "ParticleTable": "_table",
    "read_particles_cs": "cs",
    "MrcInfo": "mrc",
    "StackReader": "mrc",
    "StackWriter": "mrc",
    "open_stack": "mrc",
    "read_image": "mrc",
    "read_images": "mrc",
    "read_info": "mrc",
    "read_volume": "mrc",
    "write_mrc": "mrc",
    "read_particles_star": "star",
    "read_star_blocks": "star",
    "write_particles_star": "star",
    "write_star_blocks": "star",
}

__all__ = sorted(_EXPORTS)

def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
