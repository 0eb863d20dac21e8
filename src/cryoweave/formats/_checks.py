"""Checks every reader applies before a table leaves ``formats``: types, ranges, names.

Messages name the file, the table row (1-based: the n-th data line of the loop, or the n-th
particle of a .cs file) and the label as the file spells it, what was expected and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cryoweave.errors import InputError
from cryoweave.physical import (
    OPTICS_COLUMN_RANGES,
    PARTICLE_COLUMN_RANGES,
    PhysicalRange,
)

if TYPE_CHECKING:  # pandas loads on first use: light commands do not need it
    import pandas as pd

# box sizes (rlnImageSize, blob/shape) a real detector and a real particle can have
MIN_BOX_PX, MAX_BOX_PX = 2, 65_536


def printable(text: object) -> str:
    """``text`` on one line: control characters (newline, tab, …) shown as escapes."""
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode()
                   for c in str(text))


def one_line(exc: BaseException) -> str:
    """A library's error message on one line (pandas' tokenizer errors end with a newline)."""
    text = " ".join(str(exc).split())
    # starfile: a row with more values than labels (or every row with fewer)
    if text.startswith("Length mismatch"):
        text = f"the values in a data row do not match the labels of its loop: {text}"
    return text


def where(path: Path | str, block: str | None, row: int, label: str) -> str:
    """``file: data_particles row 3, column rlnDefocusU`` (``row`` 0-based)."""
    if label == "file name":
        return f"{path}"
    table = f"data_{block} " if block is not None else ""
    return f"{path}: {table}row {row + 1}, column {label}"


def check_unique_labels(frame: pd.DataFrame, path: Path | str, block: str) -> None:
    labels = [str(c) for c in frame.columns]
    repeated = sorted({lb for lb in labels if labels.count(lb) > 1})
    if repeated:
        raise InputError(f"{path}: data_{block} declares the column(s) {', '.join(repeated)} "
                         "more than once; remove the duplicate header line(s) and their values")


def check_complete_rows(frame: pd.DataFrame, path: Path | str, block: str) -> None:
    """A row with fewer values than the loop has labels (a truncated or cut line)."""
    if frame.shape[1] == 0 or not len(frame):
        return
    missing = frame.isna().to_numpy()
    short = np.flatnonzero(missing[:, -1])
    if len(short):
        row = int(short[0])
        values = frame.shape[1] - int(np.argmin(missing[row][::-1]))
        raise InputError(f"{path}: data_{block} row {row + 1} has {values} of the "
                         f"{frame.shape[1]} values its header declares (truncated line?); "
                         "complete or remove the row")


def numeric_column(frame: pd.DataFrame, label: str, path: Path | str, block: str, *,
                   integer: bool = False) -> pd.Series:
    """``frame[label]`` as float64 (or int64); InputError at the first non-numeric value."""
    import pandas as pd

    raw = frame[label]
    values = pd.to_numeric(raw, errors="coerce")
    bad = values.isna()  # text, or a literal nan: a missing value is a missing column
    if integer:
        finite = values.notna() & np.isfinite(values.astype(np.float64))
        bad = ~finite | (values != np.round(values))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        kind = "an integer" if integer else "a number"
        value = raw.iloc[row]
        shown = repr(value) if isinstance(value, str) else f"{value:g}"
        raise InputError(f"{where(path, block, row, label)}: {shown} is not {kind}; "
                         "correct the value (or remove the column)")
    return values.astype(np.int64) if integer else values.astype(np.float64)


def check_range(values: pd.Series | np.ndarray, expected: PhysicalRange, path: Path | str,
                block: str | None, label: str, *, rows: np.ndarray | None = None,
                allow_missing: bool = True) -> None:
    """InputError at the first value outside ``expected`` (NaN allowed as "absent")."""
    array = np.asarray(values, dtype=np.float64)
    present = ~np.isnan(array) if allow_missing else np.ones(len(array), bool)
    bad = np.flatnonzero(present & ~expected.inside(array))
    if len(bad):
        i = int(bad[0])
        row = int(rows[i]) if rows is not None else i
        raise InputError(f"{where(path, block, row, label)}: {array[i]:g} is out of range; "
                         f"expected {expected.describe()}; correct the file")


def check_box(values: pd.Series, path: Path | str, block: str | None, label: str) -> None:
    array = np.asarray(values, dtype=np.float64)
    bad = np.flatnonzero(~np.isnan(array) & ((array < MIN_BOX_PX) | (array > MAX_BOX_PX)))
    if len(bad):
        i = int(bad[0])
        raise InputError(f"{where(path, block, i, label)}: {array[i]:g} is not an image size; "
                         f"expected {MIN_BOX_PX}–{MAX_BOX_PX} px")


def check_names(values: pd.Series, path: Path | str, block: str | None, label: str) -> None:
    """No control characters (newline, tab, …): they cannot be written in a STAR file."""
    import pandas as pd

    text = values.astype(str)
    unique = pd.Series(pd.unique(text))
    if not unique.str.contains(r"[\x00-\x1f\x7f]", regex=True).any():
        return
    bad = text.str.contains(r"[\x00-\x1f\x7f]", regex=True)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(f"{where(printable(path), block, i, label)}: the file name "
                         f"'{printable(text.iloc[i])}' "
                         "contains a control character (newline, tab, …), which a STAR file "
                         "cannot hold; rename the file and its reference")


def check_file_name(path: Path | str) -> None:
    """InputError when a file's own name has a control character (it could not be exported)."""
    import pandas as pd

    check_names(pd.Series([str(path)]), path, None, "file name")


def check_particles(particles: pd.DataFrame, optics: pd.DataFrame, path: Path | str, *,
                    block: str | None, labels: Mapping[str, str],
                    optics_block: str | None = None, optics_rows: np.ndarray | None = None
                    ) -> None:
    """Ranges of the typed particle and optics columns, halves, and writable names.

    ``labels`` maps a typed column to the label the file used (for the message).
    """
    for column, expected in PARTICLE_COLUMN_RANGES.items():
        if column in particles:
            check_range(particles[column], expected, path, block, labels.get(column, column))
    if "half" in particles:
        half = particles["half"].to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isnan(half) & ~np.isin(half, (1, 2)))
        if len(bad):
            i = int(bad[0])
            raise InputError(f"{where(path, block, i, labels.get('half', 'half'))}: "
                             f"{half[i]:g} is not a half set; expected 1 or 2")
    for column in ("image_path", "micrograph_name"):
        if column in particles and particles[column].dtype == object:
            check_names(particles[column], path, block, labels.get(column, column))
    for column, expected in OPTICS_COLUMN_RANGES.items():
        if column in optics:
            check_range(optics[column], expected, path, optics_block, labels.get(column, column),
                        rows=optics_rows)
    if "box_px" in optics:
        check_box(optics["box_px"], path, optics_block, labels.get("box_px", "box_px"))
