"""Write sets out as files other programs read: RELION 3.1 STAR, MRC."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from cryoweave.errors import InputError
from cryoweave.formats import ParticleTable, atomic_path, write_particles_star, write_star_blocks
from cryoweave.workflow._sets import MicrographSet, ParticleSet, SetHandle, VolumeSet


def particle_table(particles: ParticleSet) -> ParticleTable:
    """The set as a :class:`ParticleTable`, with the source file's column order if known."""
    frame = particles.to_frame()
    layout = particles.properties.get("star_layout") or {}
    return ParticleTable(frame, particles.optics(), list(layout.get("particle_labels", [])),
                         list(layout.get("optics_labels", [])), "3.1",
                         int(layout.get("image_index_width", 6)), None)


def export_particles(particles: ParticleSet, path: Path, version: str = "3.1") -> list[Path]:
    """A RELION STAR file at ``path``; image paths relative to its folder."""
    return [write_particles_star(particle_table(particles), path, version=version)]


def export_micrographs(micrographs: MicrographSet, path: Path) -> list[Path]:
    """A RELION 3.1 micrographs STAR (data_optics + data_micrographs)."""
    frame = micrographs.to_frame()
    props = micrographs.properties
    folder = path.resolve().parent
    block = pd.DataFrame({
        "rlnMicrographName": [str(Path(p).resolve().relative_to(folder))
                              if Path(p).resolve().is_relative_to(folder) else p
                              for p in frame["path"]],
        "rlnOpticsGroup": frame["optics_group"].fillna(1).astype(int),
    })
    for column, label in (("defocus_u_a", "rlnDefocusU"), ("defocus_v_a", "rlnDefocusV"),
                          ("defocus_angle_deg", "rlnDefocusAngle")):
        if frame[column].notna().all() and len(frame):
            block[label] = frame[column]
    pixel = props.get("pixel_size_a") or (float(frame["pixel_size_a"].iloc[0])
                                          if len(frame) else None)
    optics = pd.DataFrame({
        "rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"],
        "rlnMicrographPixelSize": [pixel], "rlnVoltage": [props.get("voltage_kv")],
        "rlnSphericalAberration": [props.get("cs_mm")],
        "rlnAmplitudeContrast": [props.get("amplitude_contrast")]})
    return [write_star_blocks(path, {"optics": optics, "micrographs": block})]


def export_volume(volumes: VolumeSet, path: Path) -> list[Path]:
    """The map as MRC at ``path`` (half maps as ``<stem>_half1.mrc`` / ``_half2.mrc``)."""
    frame = volumes.to_frame()
    if not len(frame):
        raise InputError(f"volume set {volumes.id} is empty")
    row = frame.iloc[0]
    written = []
    targets = [(row["path"], path)]
    for half in ("half1_path", "half2_path"):
        if isinstance(row.get(half), str):
            targets.append((row[half], path.with_name(f"{path.stem}_{half[:5]}{path.suffix}")))
    for source, target in targets:
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
        written.append(target)
    return written


def export_set(handle: SetHandle, path: str | Path) -> list[Path]:
    path = Path(path)
    if isinstance(handle, ParticleSet):
        return export_particles(handle, path)
    if isinstance(handle, MicrographSet):
        return export_micrographs(handle, path)
    if isinstance(handle, VolumeSet):
        return export_volume(handle, path)
    raise InputError(f"sets of kind {handle.kind!r} cannot be exported to files")


def set_files(handle: SetHandle, limit: int = 1000) -> list[str]:
    """The files an output set refers to (stacks, micrographs, maps), at most ``limit``."""
    table = handle.table
    if isinstance(handle, ParticleSet):
        column = "image_path"
    elif isinstance(handle, MicrographSet | VolumeSet):
        column = "path"
    else:
        return []
    from sqlalchemy import select

    with handle.project.reader() as s:
        rows = s.execute(select(table.c[column]).distinct().where(table.c.set_id == handle.id)
                         .limit(limit)).scalars().all()
    return sorted(r for r in rows if r)
