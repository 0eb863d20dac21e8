"""Read particles from any supported file (.star, .cs, .mrcs) into a :class:`ParticleTable`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cryoweave.errors import InputError, ParamError
from cryoweave.formats import mrc
from cryoweave.formats._checks import check_file_name
from cryoweave.formats._table import ParticleTable
from cryoweave.formats.cs import read_particles_cs
from cryoweave.formats.star import read_particles_star
from cryoweave.physical import PIXEL_SIZE_A

PARTICLE_SUFFIXES = (".star", ".cs", ".mrcs", ".mrc")


def table_from_stack(path: str | Path, pixel_size_a: float | None = None) -> ParticleTable:
    """A minimal particle table for every image of an MRC stack."""
    import pandas as pd

    path = Path(path).resolve()
    check_file_name(path)
    info = mrc.read_info(path)
    pixel = pixel_size_a or info.voxel_size_a or np.nan
    if pixel_size_a is None and not PIXEL_SIZE_A.contains(pixel) and not np.isnan(pixel):
        raise InputError(f"{path}: the MRC header's pixel size {pixel:g} Å is out of range; "
                         f"expected {PIXEL_SIZE_A.describe()}; give the pixel size explicitly")
    particles = pd.DataFrame({
        "image_path": [str(path)] * info.n_images,
        "image_index": np.arange(info.n_images, dtype=np.int64),
        "optics_group": np.ones(info.n_images, dtype=np.int64),
    })
    optics = pd.DataFrame({"group_id": [1], "name": ["opticsGroup1"], "pixel_size_a": [pixel],
                           "box_px": [info.box_px], "voltage_kv": [np.nan], "cs_mm": [np.nan],
                           "amplitude_contrast": [np.nan], "rlnImageDimensionality": [2]})
    return ParticleTable(particles, optics, [], [], "mrcs", 6, path)


def read_particles(path: str | Path, *, datadir: str | Path | None = None,
                   strip_prefix: str | None = None, pixel_size_a: float | None = None
                   ) -> ParticleTable:
    """Particles from a STAR, cryoSPARC .cs or MRC stack file.

    ``pixel_size_a`` overrides (or supplies) the pixel size of every optics group.
    """
    path = Path(path)
    if pixel_size_a is not None and not PIXEL_SIZE_A.contains(pixel_size_a):
        raise ParamError(f"the pixel size {pixel_size_a:g} Å given for {path} is out of range; "
                         f"expected {PIXEL_SIZE_A.describe()}")
    suffix = path.suffix.lower()
    if suffix == ".star":
        table = read_particles_star(path, datadir=datadir, strip_prefix=strip_prefix)
    elif suffix == ".cs":
        table = read_particles_cs(path, datadir=datadir, strip_prefix=strip_prefix)
    elif suffix in (".mrcs", ".mrc"):
        table = table_from_stack(path, pixel_size_a)
    else:
        raise InputError(f"{path}: unsupported particle file type {suffix!r}; "
                         f"expected one of {', '.join(PARTICLE_SUFFIXES)}")
    if pixel_size_a is not None:
        table.optics["pixel_size_a"] = float(pixel_size_a)
    return table
