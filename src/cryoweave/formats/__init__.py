"""File formats: MRC (mrcfile), STAR (starfile), cryoSPARC .cs. Pure I/O, no database."""

from cryoweave.formats._atomic import atomic_path, temporary_path
from cryoweave.formats._checks import check_file_name
from cryoweave.formats._dispatch import PARTICLE_SUFFIXES, read_particles, table_from_stack
from cryoweave.formats._paths import PathResolver, format_image_names, split_image_names
from cryoweave.formats._table import ParticleTable
from cryoweave.formats.cs import read_particles_cs
from cryoweave.formats.mrc import (
    MrcInfo,
    StackReader,
    StackWriter,
    open_stack,
    read_image,
    read_images,
    read_info,
    read_volume,
    write_mrc,
)
from cryoweave.formats.star import (
    read_particles_star,
    read_star_blocks,
    write_particles_star,
    write_star_blocks,
)

__all__ = [
    "PARTICLE_SUFFIXES",
    "MrcInfo",
    "ParticleTable",
    "PathResolver",
    "StackReader",
    "StackWriter",
    "atomic_path",
    "check_file_name",
    "format_image_names",
    "open_stack",
    "read_image",
    "read_images",
    "read_info",
    "read_particles",
    "read_particles_cs",
    "read_particles_star",
    "read_star_blocks",
    "read_volume",
    "split_image_names",
    "table_from_stack",
    "temporary_path",
    "write_mrc",
    "write_particles_star",
    "write_star_blocks",
]
