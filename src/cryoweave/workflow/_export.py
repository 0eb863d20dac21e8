"""Write sets out as files other programs read: RELION 3.1 STAR, MRC, FSC as STAR or CSV.

* particles → a RELION STAR (a folder or a name without suffix gets ``particles.star``);
  angles and shifts with 6 decimals, as RELION writes them; with ``copy_stacks`` the image
  stacks are copied next to the STAR, which refers to them relatively (self-contained).
* micrographs → a RELION 3.1 micrographs STAR;
* volume → MRC (``.mrc``/``.map``; any other suffix is refused);
* FSC records → a RELION-style ``fsc.star`` (``data_general`` with ``rlnFinalResolution``
  and ``data_fsc``) or a CSV, of the last record (the final iteration).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from cryoweave.errors import InputError
from cryoweave.formats import ParticleTable, atomic_path, write_star_blocks
from cryoweave.formats.star import particles_to_blocks
from cryoweave.store import MicrographSet, ParticleSet, RecordSet, SetHandle, VolumeSet

# labels written with a fixed number of decimals (RELION writes angles and shifts "%.6f")
FIXED_PRECISION_LABELS = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst",
                          "rlnOriginYAngst", "rlnOriginX", "rlnOriginY", "rlnAnglePsiPrior",
                          "rlnAngleTiltPrior", "rlnAngleRotPrior")
VOLUME_SUFFIXES = (".mrc", ".map")


def particle_table(particles: ParticleSet) -> ParticleTable:
    """The set as a :class:`ParticleTable`, with the source file's column order if known."""
    frame = particles.to_frame()
    layout = particles.properties.get("star_layout") or {}
    return ParticleTable(frame, particles.optics(), list(layout.get("particle_labels", [])),
                         list(layout.get("optics_labels", [])), "3.1",
                         int(layout.get("image_index_width", 6)), None)


def fixed_precision(block: pd.DataFrame, decimals: int = 6) -> pd.DataFrame:
    """``block`` with its angle and shift columns as text with ``decimals`` decimals."""
    block = block.copy()
    for label in FIXED_PRECISION_LABELS:
        if label in block.columns and block[label].dtype.kind == "f":
            block[label] = [f"{v:.{decimals}f}" for v in block[label].to_numpy()]
    return block


def copy_stacks(table: ParticleTable, folder: Path) -> list[Path]:
    """Copy the image stacks of ``table`` into ``folder`` (a name taken twice gets its
    stack's number as a prefix) and point the table at the copies."""
    folder.mkdir(parents=True, exist_ok=True)
    mapping: dict[str, str] = {}
    used: set[str] = set()
    written = []
    for number, source in enumerate(pd.unique(table.particles["image_path"]), 1):
        name = Path(source).name
        if name in used:
            name = f"{number:04d}_{name}"
        used.add(name)
        target = folder / name
        if Path(source).resolve() != target.resolve():
            with atomic_path(target) as tmp:
                shutil.copyfile(source, tmp)
        mapping[source] = str(target)
        written.append(target)
    table.particles = table.particles.assign(image_path=table.particles["image_path"].map(mapping))
    return written


def export_particles(particles: ParticleSet, path: Path, version: str = "3.1", *,
                     copy_stacks_too: bool = False) -> list[Path]:
    """A RELION STAR file at ``path`` (a folder: ``particles.star`` inside it); image paths
    relative to its folder; with ``copy_stacks_too``, the stacks copied next to it."""
    if version not in ("3.0", "3.1"):
        raise ValueError(f"STAR version must be '3.0' or '3.1', not {version!r}")
    path = star_target(path, "particles.star")
    table = particle_table(particles)
    written = copy_stacks(table, path.parent) if copy_stacks_too else []
    blocks = particles_to_blocks(table, path.parent, version=version)
    blocks = {name: fixed_precision(block) for name, block in blocks.items()}
    return [write_star_blocks(path, blocks), *written]


def star_target(path: Path, default_name: str) -> Path:
    """``path`` itself, or ``default_name`` inside it when it is a folder or has no suffix."""
    path = Path(path)
    if path.is_dir() or not path.suffix:
        path = path / default_name
    elif path.suffix.lower() != ".star":
        raise InputError(f"{path.resolve()}: a STAR export needs a name ending in .star "
                         f"(or a folder, which gets {default_name})")
    path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def export_micrographs(micrographs: MicrographSet, path: Path) -> list[Path]:
    """A RELION 3.1 micrographs STAR (data_optics + data_micrographs)."""
    path = star_target(path, "micrographs.star")
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
    if path.suffix.lower() not in VOLUME_SUFFIXES:
        raise InputError(f"{path.resolve()}: a volume is exported as MRC; give a name ending "
                         f"in {' or '.join(VOLUME_SUFFIXES)}")
    path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
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


def fsc_record(records: RecordSet) -> dict:
    """The last FSC record of a record set (InputError when it holds no FSC curve)."""
    frame = records.to_frame()
    curves = [d for d in frame.sort_values("item_id")["data"] if isinstance(d, dict)
              and "frequency_per_a" in d and "fsc" in d] if len(frame) else []
    if not curves:
        raise InputError(f"set {records.id} ({records.name}) holds no FSC curve "
                         "(records with frequency_per_a and fsc)")
    return curves[-1]


def fsc_frame(record: dict) -> pd.DataFrame:
    """One row per shell: RELION's fsc.star labels (rlnAngstromResolution 999 at shell 0)."""
    frequency = pd.Series(record["frequency_per_a"], dtype="float64")
    shells = record.get("shell_px") or list(range(len(frequency)))
    angstrom = [1.0 / f if f > 0 else 999.0 for f in frequency]
    frame = pd.DataFrame({"rlnSpectralIndex": pd.Series(shells, dtype="int64"),
                          "rlnResolution": frequency,
                          "rlnAngstromResolution": pd.Series(angstrom, dtype="float64"),
                          "rlnFourierShellCorrelation": pd.Series(record["fsc"],
                                                                  dtype="float64")})
    if isinstance(record.get("masked"), bool):  # said by ReconstructFourier
        label = "rlnFourierShellCorrelationMaskedMaps" if record["masked"] \
            else "rlnFourierShellCorrelationUnmaskedMaps"
        frame[label] = frame["rlnFourierShellCorrelation"]
    return frame


def export_fsc(records: RecordSet, path: Path) -> list[Path]:
    """The FSC curve as ``.star`` (RELION postprocess layout) or ``.csv``."""
    record = fsc_record(records)
    frame = fsc_frame(record)
    if path.suffix.lower() == ".csv" and not path.is_dir():
        path = path.resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.6f")
        return [path]
    path = star_target(path, "fsc.star") if path.is_dir() or path.suffix.lower() == ".star" \
        else None  # type: ignore[assignment]
    if path is None:
        raise InputError("an FSC is exported as .star or .csv")
    resolutions = record.get("resolutions_a") or {}
    general = pd.DataFrame({"rlnFinalResolution": [float(resolutions.get(
        "fsc0143_interpolated", record.get("resolution_0143_a", float("nan"))))]})
    return [write_star_blocks(path, {"general": general, "fsc": frame})]


def export_set(handle: SetHandle, path: str | Path, *, copy_stacks: bool = False
               ) -> list[Path]:
    path = Path(path)
    if copy_stacks and not isinstance(handle, ParticleSet):
        raise InputError("--copy-stacks applies to particles only")
    if isinstance(handle, ParticleSet):
        return export_particles(handle, path, copy_stacks_too=copy_stacks)
    if isinstance(handle, RecordSet):
        return export_fsc(handle, path)
    if isinstance(handle, MicrographSet):
        return export_micrographs(handle, path)
    if isinstance(handle, VolumeSet):
        return export_volume(handle, path)
    raise InputError(f"sets of kind {handle.kind!r} cannot be exported to files")


def set_files(handle: SetHandle, limit: int = 1000) -> list[str]:
    """The files an output set refers to (stacks, micrographs, maps), at most ``limit``."""
    from cryoweave.store import queries

    return queries.set_files(handle.project, handle.id, limit)
