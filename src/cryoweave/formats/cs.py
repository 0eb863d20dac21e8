"""cryoSPARC ``.cs`` particle files (NumPy structured arrays) → :class:`ParticleTable`.

Conventions (as pyem's csparc2star, cryoDRGN and recovar read them):
``blob/idx`` is 0-based; ``blob/path`` may start with ``>``; ``alignments3D/pose`` is an
axis-angle vector whose rotation matrix is the transpose of RELION's A, so RELION's
(rot, tilt, psi) are its intrinsic ZYZ Euler angles; ``alignments3D/shift`` is in pixels of
``alignments3D/psize_A`` with the same sign as rlnOriginX/Y; angles in radians → degrees;
``alignments3D/split`` 0/1 → half 1/2; ``ctf/exp_group_id`` → optics group (+1 if 0-based).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cryoweave.errors import InputError
from cryoweave.formats._checks import (
    check_box,
    check_names,
    check_particles,
    check_range,
    one_line,
)
from cryoweave.formats._paths import PathResolver
from cryoweave.formats._table import ParticleTable
from cryoweave.physical import OPTICS_VALUE_COLUMNS, PIXEL_SIZE_A

if TYPE_CHECKING:  # loads on first use: light commands do not need it
    import pandas as pd

_REQUIRED = ("blob/path", "blob/idx")
# fields read together: one without the other is an incomplete file
_TOGETHER = (("alignments3D/pose", "alignments3D/shift"),
             ("location/micrograph_shape", "location/center_x_frac"),
             ("location/micrograph_shape", "location/center_y_frac"))
# typed column -> the .cs field it comes from (for messages)
CS_FIELDS = {"image_path": "blob/path", "image_index": "blob/idx",
             "micrograph_name": "location/micrograph_path",
             "coord_x_px": "location/center_x_frac", "coord_y_px": "location/center_y_frac",
             "defocus_u_a": "ctf/df1_A", "defocus_v_a": "ctf/df2_A",
             "defocus_angle_deg": "ctf/df_angle_rad", "phase_shift_deg": "ctf/phase_shift_rad",
             "ctf_bfactor": "ctf/bfactor", "ctf_scale": "ctf/scale",
             "rot_deg": "alignments3D/pose", "tilt_deg": "alignments3D/pose",
             "psi_deg": "alignments3D/pose", "shift_x_a": "alignments3D/shift",
             "shift_y_a": "alignments3D/shift", "half": "alignments3D/split",
             "pixel_size_a": "blob/psize_A", "box_px": "blob/shape",
             "voltage_kv": "ctf/accel_kv", "cs_mm": "ctf/cs_mm",
             "amplitude_contrast": "ctf/amp_contrast"}


def read_cs_array(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: cryoSPARC .cs file not found")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise InputError(f"{path}: not a readable cryoSPARC .cs file ({one_line(exc)})"
                         ) from exc
    if data.dtype.names is None:
        raise InputError(f"{path}: not a cryoSPARC .cs file (no named fields)")
    names = data.dtype.names
    missing = [f for f in _REQUIRED if f not in names]
    if missing:
        raise InputError(f"{path}: .cs file lacks the required field(s) {', '.join(missing)}")
    for first, second in _TOGETHER:
        if first in names and second not in names:
            raise InputError(f"{path}: .cs file has {first} but not {second}; export the "
                             "particles again from cryoSPARC (or remove the incomplete fields)")
    if data.ndim != 1:
        raise InputError(f"{path}: not a cryoSPARC .cs file (a {data.ndim}-D array, expected "
                         "one row per particle)")
    if not len(data):
        raise InputError(f"{path}: the .cs file holds no particles")
    _check_fields(data, path)
    return data


# fields with several values per particle, and how many; every other field read holds one
_VECTOR_FIELDS = {"alignments3D/pose": 3, "alignments3D/shift": 2,
                  "location/micrograph_shape": 2, "blob/shape": 2}
_TEXT_FIELDS = ("blob/path", "location/micrograph_path")
_READ_FIELDS = frozenset([*CS_FIELDS.values(), "ctf/exp_group_id", "alignments3D/psize_A",
                          "alignments3D/class", "location/micrograph_shape"])


def _check_fields(data: np.ndarray, path: Path) -> None:
    """Every field this reader uses has the shape and kind cryoSPARC writes, and numbers are
    finite."""
    for name in sorted(_READ_FIELDS & set(data.dtype.names)):
        field = data.dtype.fields[name][0]
        expected = (_VECTOR_FIELDS[name],) if name in _VECTOR_FIELDS else ()
        if field.shape != expected and not (name == "blob/shape" and field.shape == (3,)):
            raise InputError(f"{path}: .cs field {name} holds {field.shape or 'one value'} per "
                             f"particle, expected {expected or 'one value'}")
        kinds = "SUO" if name in _TEXT_FIELDS else "biuf"
        if field.base.kind not in kinds:
            raise InputError(f"{path}: .cs field {name} holds {field.base} values, expected "
                             f"{'file names' if name in _TEXT_FIELDS else 'numbers'}")
        if field.base.kind == "f":
            finite = np.isfinite(data[name]).reshape(len(data), -1).all(axis=1)
            if not finite.all():
                row = int(np.flatnonzero(~finite)[0])
                raise InputError(f"{path}: row {row + 1}, field {name}: "
                                 f"{data[name][row]} is not a finite number; correct the file")


def _decode(values: np.ndarray, path: Path, field: str) -> list[str]:
    """Text of a bytes field (UTF-8); InputError naming the row of an undecodable name."""
    out = []
    for row, value in enumerate(values):
        try:
            out.append(value.decode() if isinstance(value, bytes) else str(value))
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: row {row + 1}, field {field}: {value!r} is not UTF-8 "
                             f"text ({exc.reason}); correct the file name") from exc
    return out


def poses_from_rotvec(rotvec: np.ndarray) -> np.ndarray:
    """RELION (rot, tilt, psi) in degrees from cryoSPARC axis-angle poses ``(n, 3)``."""
    from scipy.spatial.transform import Rotation  # scipy is slow to import: on use

    return Rotation.from_rotvec(np.asarray(rotvec, dtype=np.float64)).as_euler(
        "ZYZ", degrees=True)


def read_particles_cs(path: str | Path, *, datadir: str | Path | None = None,
                      strip_prefix: str | None = None) -> ParticleTable:
    """Read a cryoSPARC particle ``.cs`` file (CTF, poses, shifts, pixel size, halves)."""
    import pandas as pd

    path = Path(path).resolve()
    cs = read_cs_array(path)
    names = set(cs.dtype.names)
    n = len(cs)
    names_text = _decode(cs["blob/path"], path, "blob/path")
    raw = pd.Series([p[1:] if p.startswith(">") else p for p in names_text])
    resolver = PathResolver(path.parent, datadir, strip_prefix)
    check_names(raw, path, None, "blob/path")
    index = cs["blob/idx"]
    bad = np.flatnonzero((index < 0) | (index != np.round(index)))
    if len(bad):
        raise InputError(f"{path}: row {bad[0] + 1}, field blob/idx: {index[bad[0]]} is not an "
                         "image index; expected an integer ≥ 0 (0-based)")
    particles = pd.DataFrame({
        "image_path": resolver.resolve_series(raw).to_numpy(),
        "image_index": index.astype(np.int64),
    })
    if "location/micrograph_path" in names:
        particles["micrograph_name"] = _decode(cs["location/micrograph_path"], path,
                                              "location/micrograph_path")
        if "location/micrograph_shape" in names:
            shape = cs["location/micrograph_shape"]
            particles["coord_x_px"] = np.round(cs["location/center_x_frac"] * shape[:, 1])
            particles["coord_y_px"] = np.round((1 - cs["location/center_y_frac"]) * shape[:, 0])
    ctf = {"ctf/df1_A": "defocus_u_a", "ctf/df2_A": "defocus_v_a", "ctf/bfactor": "ctf_bfactor",
           "ctf/scale": "ctf_scale"}
    for field, column in ctf.items():
        if field in names:
            particles[column] = cs[field].astype(np.float64)
    if "ctf/df_angle_rad" in names:
        particles["defocus_angle_deg"] = np.rad2deg(cs["ctf/df_angle_rad"].astype(np.float64))
    if "ctf/phase_shift_rad" in names:
        particles["phase_shift_deg"] = np.rad2deg(cs["ctf/phase_shift_rad"].astype(np.float64))

    groups = np.ones(n, dtype=np.int64)
    if "ctf/exp_group_id" in names:
        raw_groups = cs["ctf/exp_group_id"].astype(np.int64)
        bad = np.flatnonzero(raw_groups < 0)
        if len(bad):
            raise InputError(f"{path}: row {bad[0] + 1}, field ctf/exp_group_id: "
                             f"{raw_groups[bad[0]]} is not an exposure group; expected ≥ 0")
        groups = raw_groups + 1 if raw_groups.min(initial=1) == 0 else raw_groups
    particles["optics_group"] = groups
    pixel = (cs["blob/psize_A"].astype(np.float64) if "blob/psize_A" in names
             else np.full(n, np.nan))
    if "alignments3D/pose" in names:
        angles = poses_from_rotvec(cs["alignments3D/pose"])
        particles["rot_deg"], particles["tilt_deg"], particles["psi_deg"] = angles.T
        shift_pixel = pixel
        if "alignments3D/psize_A" in names:
            shift_pixel = cs["alignments3D/psize_A"].astype(np.float64)
            check_range(shift_pixel, PIXEL_SIZE_A, path, None, "alignments3D/psize_A")
        shifts = cs["alignments3D/shift"].astype(np.float64) * shift_pixel[:, None]
        particles["shift_x_a"], particles["shift_y_a"] = shifts.T
        if "alignments3D/split" in names:
            split = cs["alignments3D/split"].astype(np.int64)
            bad = np.flatnonzero((split != 0) & (split != 1))
            if len(bad):
                raise InputError(f"{path}: row {bad[0] + 1}, field alignments3D/split: "
                                 f"{split[bad[0]]} is not a half set; expected 0 or 1")
            particles["half"] = split + 1
        if "alignments3D/class" in names:
            particles["rlnClassNumber"] = cs["alignments3D/class"].astype(np.int64) + 1

    optics_fields = {"ctf/accel_kv": "voltage_kv", "ctf/cs_mm": "cs_mm",
                     "ctf/amp_contrast": "amplitude_contrast"}
    per_particle = pd.DataFrame({"group_id": groups, "pixel_size_a": pixel})
    if "blob/shape" in names:
        shape = cs["blob/shape"].reshape(n, -1)
        check_box(pd.Series(shape[:, -1]), path, None, "blob/shape")
        per_particle["box_px"] = shape[:, -1].astype(np.int64)
    for field, column in optics_fields.items():
        if field in names:
            per_particle[column] = cs[field].astype(np.float64)
    particles = particles.copy()
    labels = {c: CS_FIELDS.get(c, c) for c in [*particles.columns, *per_particle.columns]}
    if "alignments3D/psize_A" in names:
        labels["shift_x_a"] = labels["shift_y_a"] = "alignments3D/shift × alignments3D/psize_A"
    check_particles(particles, per_particle, path, block=None, labels=labels)
    optics = per_particle.groupby("group_id", sort=True).first().reset_index()
    _check_uniform_optics(per_particle, path)
    optics.insert(1, "name", [f"opticsGroup{g}" for g in optics["group_id"]])
    for column in OPTICS_VALUE_COLUMNS:
        if column not in optics:
            optics[column] = np.nan
    optics["rlnImageDimensionality"] = 2
    return ParticleTable(particles, optics, [], [], "cs", 6, path)


def _check_uniform_optics(per_particle: pd.DataFrame, path: Path) -> None:
    varying = [c for c in per_particle.columns if c != "group_id"
               and (per_particle.groupby("group_id")[c].nunique(dropna=True) > 1).any()]
    if varying:
        raise InputError(f"{path}: {', '.join(varying)} vary within one exposure group; "
                         "split the file by exposure group in cryoSPARC first")
