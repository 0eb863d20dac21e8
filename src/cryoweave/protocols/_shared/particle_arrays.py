"""Particle metadata as arrays, the form numeric steps take (written by a plan, read by steps).

Steps never read the database: the plan writes what they need — stack paths and indices,
poses, shifts in Å, CTF parameters, optics per group, halves — to one ``.npz`` (no pickles).
The ``.npz`` helpers here (atomic write, read, stack paths as codes, optics as JSON) are the
one implementation of that hand-off for every protocol.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cryoweave.engine import ctf_2d, euler_to_matrix
from cryoweave.errors import InputError
from cryoweave.physical import OPTICS_VALUE_COLUMNS, PIXEL_SIZE_A

if TYPE_CHECKING:  # pandas loads on first use: light commands do not need it
    import pandas as pd

ARRAY_COLUMNS = ("item_id", "image_index", "rot_deg", "tilt_deg", "psi_deg", "shift_x_a",
                 "shift_y_a", "defocus_u_a", "defocus_v_a", "defocus_angle_deg",
                 "phase_shift_deg", "ctf_bfactor", "ctf_scale", "optics_group", "half")
OPTICS_COLUMNS = ("group_id", *OPTICS_VALUE_COLUMNS)  # the numeric ones: no group name


@dataclass
class ParticleArrays:
    """Per-particle arrays (length n) and per-optics-group facts."""

    paths: np.ndarray  # (n,) object: stack file of each particle
    columns: dict[str, np.ndarray]
    optics: pd.DataFrame
    phase_flipped: bool = False

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    @property
    def pixel_size_a(self) -> float:
        return float(self.optics["pixel_size_a"].iloc[0])

    @property
    def box_px(self) -> int:
        return int(self.optics["box_px"].iloc[0])

    def matrices(self, rows: slice | np.ndarray) -> np.ndarray:
        """RELION rotation matrices A of the selected particles, (n, 3, 3) float64."""
        c = self.columns
        return euler_to_matrix(c["rot_deg"][rows], c["tilt_deg"][rows], c["psi_deg"][rows])

    def origins_px(self, rows: slice | np.ndarray) -> np.ndarray:
        """RELION origins in pixels, (n, 2) = (rlnOriginXAngst, rlnOriginYAngst) / pixel size."""
        c = self.columns
        return np.stack([c["shift_x_a"][rows], c["shift_y_a"][rows]], axis=1) / self.pixel_size_a

    def ctf(self, rows: slice | np.ndarray, *, box_px: int | None = None,
            pixel_size_a: float | None = None,
            defocus_offset_a: np.ndarray | None = None) -> np.ndarray:
        """CTFs on the rfft2 grid, (n, N, N//2+1) float32 (|CTF| when phase-flipped).

        ``box_px``/``pixel_size_a`` evaluate them for images resampled to another grid;
        ``defocus_offset_a`` (n,) moves defocus U and V of each particle.
        """
        c = {k: v[rows] for k, v in self.columns.items()}
        if defocus_offset_a is not None:
            c["defocus_u_a"] = c["defocus_u_a"] + defocus_offset_a
            c["defocus_v_a"] = c["defocus_v_a"] + defocus_offset_a
        n = len(c["item_id"])
        box = box_px or self.box_px
        pixel = pixel_size_a or self.pixel_size_a
        out = np.empty((n, box, box // 2 + 1), np.float32)
        for group, optics in self.optics.set_index("group_id").iterrows():
            mask = c["optics_group"] == group
            if not mask.any():
                continue
            out[mask] = ctf_2d(
                c["defocus_u_a"][mask], c["defocus_v_a"][mask], c["defocus_angle_deg"][mask],
                voltage_kv=float(optics["voltage_kv"]), cs_mm=float(optics["cs_mm"]),
                amplitude_contrast=float(optics["amplitude_contrast"]), pixel_size_a=pixel,
                box_px=box, phase_shift_deg=c["phase_shift_deg"][mask],
                bfactor=c["ctf_bfactor"][mask], scale=c["ctf_scale"][mask])
        return np.abs(out) if self.phase_flipped else out


def arrays_from_frame(frame: pd.DataFrame, optics: pd.DataFrame, *, phase_flipped: bool = False,
                      require: tuple[str, ...] = ()) -> ParticleArrays:
    """ParticleArrays from a particle-set frame; ``require`` names columns that must be set."""
    import pandas as pd

    missing = [c for c in require if c not in frame or frame[c].isna().any()]
    if missing:
        raise InputError(f"the particles lack {', '.join(missing)} (some or all); this "
                         "protocol needs them")
    defaults = {"phase_shift_deg": 0.0, "ctf_bfactor": 0.0, "ctf_scale": 1.0, "shift_x_a": 0.0,
                "shift_y_a": 0.0, "half": 0, "defocus_angle_deg": 0.0}
    columns = {}
    for name in ARRAY_COLUMNS:
        values = frame[name] if name in frame else pd.Series(np.nan, index=frame.index)
        if name in defaults:
            values = values.fillna(defaults[name])
        dtype = np.int64 if name in ("item_id", "image_index", "optics_group", "half") \
            else np.float64
        columns[name] = values.to_numpy(dtype=dtype, na_value=np.nan if dtype is np.float64
                                        else 0)
    return ParticleArrays(frame["image_path"].to_numpy(dtype=object), columns,
                          optics[list(OPTICS_COLUMNS)].copy(), phase_flipped)


def write_npz(path: Path, **arrays: Any) -> None:
    """``np.savez`` to a temporary name, renamed into place when complete (no pickles)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    with open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    os.replace(tmp, path)


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def encode_paths(paths: Any) -> dict[str, np.ndarray]:
    """Stack paths `(n,)` as ``path_code`` `(n,)` int64 into ``paths`` (the unique ones)."""
    import pandas as pd

    codes, uniques = pd.factorize(pd.Series(paths))
    return {"path_code": codes.astype(np.int64), "paths": np.asarray(uniques, dtype=str)}


def decode_paths(data: Any) -> np.ndarray:
    """The `(n,)` object array of stack paths that ``encode_paths`` wrote."""
    return data["paths"][data["path_code"]].astype(object)


def encode_optics(optics: pd.DataFrame) -> np.ndarray:
    return np.asarray(optics.to_json(orient="records"))


def decode_optics(data: Any) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(json.loads(str(data["optics"])))


def write_arrays(path: Path, arrays: ParticleArrays) -> None:
    write_npz(path, **encode_paths(arrays.paths), optics=encode_optics(arrays.optics),
              phase_flipped=np.asarray(arrays.phase_flipped), **arrays.columns)


def read_arrays(path: str | Path) -> ParticleArrays:
    data = read_npz(path)
    columns = {name: data[name] for name in ARRAY_COLUMNS}
    return ParticleArrays(decode_paths(data), columns, decode_optics(data),
                          bool(data["phase_flipped"]))


def uniform_grid_problem(optics: pd.DataFrame) -> str | None:
    """A message when the particles do not share one pixel size and box, else None."""
    import pandas as pd

    pixel = pd.to_numeric(optics["pixel_size_a"], errors="coerce").astype(np.float64)
    if not len(pixel) or not all(PIXEL_SIZE_A.contains(v) for v in pixel):
        return (f"the particles' pixel sizes {pixel.tolist()} are missing or out of range; "
                f"expected {PIXEL_SIZE_A.describe()}; import them again with the params key "
                "'pixel_size_a'")
    pixels = pixel.unique()
    boxes = optics["box_px"].dropna().unique()
    if len(pixels) != 1 or len(boxes) != 1:
        return (f"the particles have pixel sizes {sorted(map(float, pixels))} Å and boxes "
                f"{sorted(map(int, boxes))} px in different optics groups; bring them to one "
                "grid first (Downsample with pixel_size_a)")
    return None


def describe(arrays: ParticleArrays) -> dict[str, Any]:
    return {"particles": len(arrays), "box_px": arrays.box_px,
            "pixel_size_a": arrays.pixel_size_a}
