"""RELION STAR particle files, 3.0 (one table, pixel origins) and 3.1+/5 (optics table, Å).

Reading gives a :class:`ParticleTable` with typed columns and every other column kept under
its label and in its position; writing produces RELION 3.1 (default) or 3.0 layout.
"""

from __future__ import annotations

import csv
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cryoweave import __version__
from cryoweave.errors import InputError
from cryoweave.formats._atomic import atomic_path
from cryoweave.formats._checks import (
    check_complete_rows,
    check_particles,
    check_range,
    check_unique_labels,
    numeric_column,
    one_line,
)
from cryoweave.formats._paths import (
    PathResolver,
    format_image_names,
    relative_to,
    split_image_names,
)
from cryoweave.formats._table import (
    IMAGE_LABEL,
    OPTICS_LABELS,
    OPTICS_TO_LABEL,
    PARTICLE_LABELS,
    PIXEL_ORIGIN_LABELS,
    RELION30_OPTICS_LABELS,
    TYPED_PARTICLE_ORDER,
    TYPED_TO_LABEL,
    ParticleTable,
)
from cryoweave.physical import OPTICS_COLUMNS, OPTICS_VALUE_COLUMNS, RELION30_COLUMN_RANGES

if TYPE_CHECKING:  # loads on first use: light commands do not need it
    import pandas as pd

# labels whose values must be numbers (integers for the second set), wherever they appear
NUMERIC_LABELS = frozenset(
    [label for label in PARTICLE_LABELS if label != "rlnMicrographName"]
    + [label for label in OPTICS_LABELS if label != "rlnOpticsGroupName"]
    + list(RELION30_OPTICS_LABELS) + list(PIXEL_ORIGIN_LABELS) + ["rlnImageDimensionality"])
INTEGER_LABELS = frozenset(["rlnOpticsGroup", "rlnRandomSubset", "rlnImageSize",
                            "rlnImageDimensionality"])


def format_float(value: float) -> str:
    """RELION's ``%.6f`` when it is exact, else the shortest round-trip representation.

    Every value read from a STAR file survives a write/read cycle, and floats stay floats.
    """
    text = f"{value:.6f}"
    if float(text) == value:
        return text
    text = repr(float(value))
    return text if ("." in text or "e" in text or "n" in text) else text + ".0"


def format_float_column(values: np.ndarray) -> list[str]:
    """:func:`format_float` for a whole column: ``%.6f`` per value, checked by parsing back."""
    texts = ["%.6f" % v for v in values.tolist()]  # noqa: UP031 (fastest formatter)
    parsed = np.array(texts, dtype=np.float64)
    inexact = np.flatnonzero((parsed != values) & ~np.isnan(values))
    for i in inexact:
        texts[i] = format_float(float(values[i]))
    return texts


def _loop_text(name: str, block: pd.DataFrame) -> str:
    """One ``data_<name>`` loop, in starfile's layout.

    Written with pandas' C CSV writer on preformatted columns: floats exact (see
    :func:`format_float_column`), strings quoted only when they contain a space or are empty.
    (starfile's own writer calls Python per cell: ~26 s per million particles.)
    """
    import pandas as pd

    columns = {}
    for label in block.columns:
        series = block[label]
        if series.dtype.kind == "f":
            columns[label] = format_float_column(series.to_numpy(np.float64))
        elif series.dtype.kind in "iub":
            columns[label] = series
        else:
            text = series.astype(str)
            needs = text.str.contains(" ", regex=False) | (text == "")
            columns[label] = text.where(~needs, '"' + text + '"')
    head = [f"data_{name}", "", "loop_"]
    head += [f"_{label} #{i}" for i, label in enumerate(block.columns, 1)]
    body = pd.DataFrame(columns, index=block.index).to_csv(
        sep="\t", header=False, index=False, quoting=csv.QUOTE_NONE, lineterminator="\n")
    return "\n".join(head) + "\n" + body + "\n\n"


_PARTICLE_BLOCKS = ("particles", "images", "", "data", "movies")


def read_star_blocks(path: str | Path) -> dict[str, pd.DataFrame]:
    """All data blocks of a STAR file (InputError for a missing or unreadable file)."""
    import pandas as pd
    import starfile

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: STAR file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            blocks = starfile.read(path, always_dict=True)
    except Exception as exc:
        raise InputError(f"{path}: not a readable STAR file ({one_line(exc)})") from exc
    return {name: (block if isinstance(block, pd.DataFrame) else pd.DataFrame([block]))
            for name, block in blocks.items()}


def write_star_blocks(path: str | Path, blocks: dict[str, pd.DataFrame]) -> Path:
    """Write data blocks atomically."""
    path = Path(path)
    stamp = time.strftime("%H:%M:%S on %d/%m/%Y")
    text = f"# Created by cryoweave {__version__} at {stamp}\n\n\n"
    text += "".join(_loop_text(name, block) for name, block in blocks.items())
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def _particle_block(blocks: dict[str, pd.DataFrame], path: Path) -> tuple[str, pd.DataFrame]:
    for name in _PARTICLE_BLOCKS:
        if name in blocks and IMAGE_LABEL in blocks[name].columns:
            return name, blocks[name]
    for name, block in blocks.items():
        if IMAGE_LABEL in block.columns:
            return name, block
    names = ", ".join(f"data_{n}" for n in blocks) or "none"
    raise InputError(
        f"{path}: no particle table with the required column {IMAGE_LABEL} "
        f"(data blocks found: {names})"
    )


def _typed_block(frame: pd.DataFrame, path: Path, block: str) -> pd.DataFrame:
    """``frame`` with unique labels, complete rows, and numbers in every numeric column."""
    check_unique_labels(frame, path, block)
    check_complete_rows(frame, path, block)
    frame = frame.copy()
    for label in frame.columns:
        if label in NUMERIC_LABELS:
            frame[label] = numeric_column(frame, label, path, block,
                                          integer=label in INTEGER_LABELS)
    return frame


def _optics_from_relion30(frame: pd.DataFrame
                          ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Group RELION 3.0 per-particle optics columns into optics groups.

    Returns the groups, each particle's group id and each group's first particle row.
    """
    import pandas as pd

    present = [c for c in RELION30_OPTICS_LABELS if c in frame.columns]
    if not present or not len(frame):
        return (pd.DataFrame({"group_id": [1], "name": ["opticsGroup1"]}),
                np.ones(len(frame), dtype=np.int64), np.zeros(1, np.int64))
    keys = frame[present].astype(str).agg("|".join, axis=1)
    codes, uniques = pd.factorize(keys)
    firsts = [int(np.flatnonzero(codes == k)[0]) for k in range(len(uniques))]
    optics = frame.iloc[firsts][present].reset_index(drop=True)
    optics.insert(0, "group_id", np.arange(1, len(uniques) + 1))
    optics.insert(1, "name", [f"opticsGroup{i}" for i in range(1, len(uniques) + 1)])
    if "rlnImagePixelSize" not in optics and {"rlnDetectorPixelSize", "rlnMagnification"} <= set(
        optics.columns
    ):
        optics["pixel_size_a"] = (optics["rlnDetectorPixelSize"].astype(float) * 1e4
                                  / optics["rlnMagnification"].astype(float))
    optics = optics.rename(columns={k: v for k, v in OPTICS_LABELS.items() if k in optics})
    return optics, codes.astype(np.int64) + 1, np.asarray(firsts, np.int64)


def _normalise_optics(optics: pd.DataFrame) -> pd.DataFrame:
    optics = optics.rename(columns={k: v for k, v in OPTICS_LABELS.items() if k in optics})
    for column in OPTICS_COLUMNS:
        if column not in optics.columns:
            optics[column] = None if column == "name" else np.nan
    if optics["name"].isna().any():
        optics["name"] = [n if isinstance(n, str) else f"opticsGroup{g}"
                          for n, g in zip(optics["name"], optics["group_id"], strict=True)]
    optics["group_id"] = optics["group_id"].astype(np.int64)
    for column in OPTICS_VALUE_COLUMNS:
        if column != "box_px":
            optics[column] = optics[column].astype(np.float64)
    return optics.reset_index(drop=True)


def read_particles_star(path: str | Path, *, datadir: str | Path | None = None,
                        strip_prefix: str | None = None) -> ParticleTable:
    """Read a RELION 3.0 or 3.1+ particle STAR file.

    Stack paths are resolved with :class:`PathResolver` (missing stacks are not an error here;
    the importer checks them). RELION 3.0 pixel origins become shifts in Å.
    """
    path = Path(path).resolve()
    blocks = read_star_blocks(path)
    block, frame = _particle_block(blocks, path)
    frame = _typed_block(frame, path, block)
    labels = [str(c) for c in frame.columns]
    label_of = {**TYPED_TO_LABEL, **OPTICS_TO_LABEL}
    if "optics" in blocks:
        version = "3.1"
        raw_optics = _typed_block(blocks["optics"], path, "optics")
        optics_labels = [str(c) for c in raw_optics.columns]
        _check_optics_groups(raw_optics, path)
        optics = _normalise_optics(raw_optics)
        optics_block, optics_rows = "optics", None
        if "rlnOpticsGroup" not in frame.columns:
            if len(optics) != 1:
                raise InputError(f"{path}: particles lack rlnOpticsGroup but there are "
                                 f"{len(optics)} optics groups")
            frame["rlnOpticsGroup"] = int(optics["group_id"].iloc[0])
        unknown = ~frame["rlnOpticsGroup"].isin(set(optics["group_id"]))
        if unknown.any():
            row = int(np.flatnonzero(unknown.to_numpy())[0])
            raise InputError(f"{path}: data_{block} row {row + 1}, column rlnOpticsGroup: "
                             f"group {frame['rlnOpticsGroup'].iloc[row]} is not defined in "
                             "data_optics; add it there or correct the row")
    else:
        version = "3.0"
        optics_labels = []
        _check_relion30_optics(frame, path, block)
        optics, group, optics_rows = _optics_from_relion30(frame)
        optics = _normalise_optics(optics)
        optics_block = block
        if "rlnImagePixelSize" not in frame.columns:
            label_of["pixel_size_a"] = "rlnDetectorPixelSize × 10⁴ / rlnMagnification"
        frame = frame.drop(columns=[c for c in RELION30_OPTICS_LABELS if c in frame.columns])
        frame["rlnOpticsGroup"] = group
    for label, column in PIXEL_ORIGIN_LABELS.items():
        if label in frame.columns and TYPED_TO_LABEL[column] not in frame.columns:
            label_of[column] = f"{label} × pixel size"

    indices, raw_paths, width = split_image_names(frame[IMAGE_LABEL], path)
    resolver = PathResolver(path.parent, datadir, strip_prefix)
    particles = frame.drop(columns=[IMAGE_LABEL])
    particles.insert(0, "image_path", resolver.resolve_series(raw_paths.reset_index(drop=True))
                     .to_numpy())
    particles.insert(1, "image_index", indices)
    particles = particles.rename(columns=PARTICLE_LABELS)
    pixel_size = particles["optics_group"].map(
        dict(zip(optics["group_id"], optics["pixel_size_a"], strict=True))).astype(float)
    for label, column in PIXEL_ORIGIN_LABELS.items():
        if label in particles.columns:
            if column in particles.columns:  # both present: Å wins, px is dropped
                particles = particles.drop(columns=[label])
            else:
                particles[column] = particles.pop(label).astype(float) * pixel_size
    particles["optics_group"] = particles["optics_group"].astype(np.int64)
    particles = particles.reset_index(drop=True)
    check_particles(particles, optics, path, block=block, labels=label_of,
                    optics_block=optics_block, optics_rows=optics_rows)
    return ParticleTable(particles, optics, labels, optics_labels, version, width, path)


def _check_optics_groups(optics: pd.DataFrame, path: Path) -> None:
    if "rlnOpticsGroup" not in optics.columns:
        raise InputError(f"{path}: data_optics lacks the required column rlnOpticsGroup; "
                         "add it (1, 2, … per row) as RELION 3.1 writes it")
    groups = optics["rlnOpticsGroup"]
    if groups.duplicated().any():
        row = int(np.flatnonzero(groups.duplicated().to_numpy())[0])
        raise InputError(f"{path}: data_optics row {row + 1}, column rlnOpticsGroup: group "
                         f"{int(groups.iloc[row])} is defined twice; give each row its own "
                         "group number")


def _check_relion30_optics(frame: pd.DataFrame, path: Path, block: str) -> None:
    """RELION 3.0 detector pixel size and magnification (the pixel size derives from them)."""
    for label, expected in RELION30_COLUMN_RANGES.items():
        if label in frame.columns:
            check_range(frame[label], expected, path, block, label)


def _ordered_labels(table: ParticleTable, version: str) -> list[str]:
    """Particle labels to write: the source's order, then new typed ones, then new extras."""
    out: list[str] = []
    for label in table.particle_labels:
        if version == "3.1" and label in RELION30_OPTICS_LABELS:
            continue
        if label in PIXEL_ORIGIN_LABELS and version == "3.1":
            label = label + "Angst"
        elif label in ("rlnOriginXAngst", "rlnOriginYAngst") and version == "3.0":
            label = label.removesuffix("Angst")
        if label not in out:
            out.append(label)
    cols = table.particles.columns
    for column in TYPED_PARTICLE_ORDER:
        label = IMAGE_LABEL if column == "image_path" else TYPED_TO_LABEL[column]
        if version == "3.0" and column in ("shift_x_a", "shift_y_a"):
            label = label.removesuffix("Angst")
        if label == "rlnOpticsGroup" and version == "3.0":
            continue
        if column in cols and label not in out and table.particles[column].notna().any():
            out.append(label)
    for column in cols:
        if column.startswith("rln") and column not in out and column not in TYPED_PARTICLE_ORDER:
            out.append(column)
    if version == "3.0":
        for label in RELION30_OPTICS_LABELS:
            if label not in out and label != "rlnImagePixelSize":
                out.append(label)
    return out


def _optics_block(table: ParticleTable) -> pd.DataFrame:
    optics = table.optics.copy()
    labels = list(table.optics_labels) or ["rlnOpticsGroup", "rlnOpticsGroupName",
                                           "rlnAmplitudeContrast", "rlnSphericalAberration",
                                           "rlnVoltage", "rlnImagePixelSize", "rlnImageSize",
                                           "rlnImageDimensionality"]
    optics = optics.rename(columns=OPTICS_TO_LABEL)
    if "rlnImageDimensionality" in labels and "rlnImageDimensionality" not in optics:
        optics["rlnImageDimensionality"] = 2
    for label in optics.columns:
        if label not in labels and label.startswith("rln") and optics[label].notna().any():
            labels.append(label)
    labels = [lb for lb in labels if lb in optics.columns and optics[lb].notna().any()]
    block = optics[labels].copy()
    for label in ("rlnOpticsGroup", "rlnImageSize", "rlnImageDimensionality"):
        if label in block:
            block[label] = block[label].astype(np.int64)
    return block


def particles_to_blocks(table: ParticleTable, star_dir: Path, *, version: str = "3.1"
                        ) -> dict[str, pd.DataFrame]:
    """STAR data blocks for ``table`` written into ``star_dir`` (image paths made relative)."""
    import pandas as pd

    p = table.particles
    optics_by_group = table.optics.set_index("group_id")
    rel = {path: relative_to(path, star_dir) for path in pd.unique(p["image_path"])}
    columns: dict[str, object] = {}
    for label in _ordered_labels(table, version):
        if label == IMAGE_LABEL:
            columns[label] = format_image_names(p["image_index"].to_numpy(),
                                                p["image_path"].map(rel).tolist(),
                                                table.image_index_width)
        elif label in ("rlnOriginX", "rlnOriginY") and version == "3.0":
            pixel = p["optics_group"].map(optics_by_group["pixel_size_a"]).astype(float)
            columns[label] = p[PIXEL_ORIGIN_LABELS[label]] / pixel
        elif label in PARTICLE_LABELS:
            columns[label] = p[PARTICLE_LABELS[label]]
        elif version == "3.0" and label in RELION30_OPTICS_LABELS:
            source = OPTICS_LABELS.get(label, label)
            if label == "rlnDetectorPixelSize" and source not in optics_by_group:
                columns[label] = p["optics_group"].map(optics_by_group["pixel_size_a"])
            elif label == "rlnMagnification" and source not in optics_by_group:
                columns[label] = 10000.0
            elif source in optics_by_group:
                columns[label] = p["optics_group"].map(optics_by_group[source])
        elif label in p.columns:
            columns[label] = p[label]
    frame = pd.DataFrame(columns)
    for label in ("rlnOpticsGroup", "rlnRandomSubset"):
        if label in frame and frame[label].notna().all():
            frame[label] = frame[label].astype(np.int64)
    if version == "3.0":
        return {"": frame}
    return {"optics": _optics_block(table), "particles": frame}


def write_particles_star(table: ParticleTable, path: str | Path, *, version: str = "3.1"
                         ) -> Path:
    """Write ``table`` as a RELION 3.1 (or 3.0) STAR file, atomically."""
    path = Path(path).resolve()
    if version not in ("3.0", "3.1"):
        raise ValueError(f"STAR version must be '3.0' or '3.1', not {version!r}")
    return write_star_blocks(path, particles_to_blocks(table, path.parent, version=version))
