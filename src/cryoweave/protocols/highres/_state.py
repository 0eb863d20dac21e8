"""Files one iteration leaves for the next (``extra/iter_NN/``), read and written atomically.

Per iteration: ``schedule.json`` (the grid and search settings), ``ref_h1.mrc``/``ref_h2.mrc``,
``align_h{h}_c{k}.npz`` (assignment of a chunk), ``poses.npz`` (poses, scores, weights of every
particle after the iteration), ``sums_h{h}.npy``, ``half1.mrc``/``half2.mrc``/``map.mrc`` and
``result.json`` (resolution, FSC, statistics). ``result.json`` is written last: an iteration is
complete when it exists.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from cryoweave.protocols._shared.particle_arrays import ParticleArrays

POSE_FIELDS = ("rot_deg", "tilt_deg", "psi_deg", "shift_x_a", "shift_y_a", "score", "weight",
               "percentile", "angular_change_deg", "half", "used", "defocus_group",
               "defocus_change_a", "gray_scale", "gray_offset", "magnification")


def iteration_dir(extra: Path, index: int) -> Path:
    return extra / f"iter_{index:02d}"


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(data, indent=1, default=float))
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def completed_iterations(extra: Path) -> int:
    """The number of consecutive complete iterations (result.json written)."""
    index = 0
    while (iteration_dir(extra, index + 1) / "result.json").exists():
        index += 1
    return index


def initial_poses(arrays: ParticleArrays, halves: np.ndarray) -> dict[str, np.ndarray]:
    n = len(arrays)
    return {"rot_deg": arrays["rot_deg"].copy(), "tilt_deg": arrays["tilt_deg"].copy(),
            "psi_deg": arrays["psi_deg"].copy(), "shift_x_a": arrays["shift_x_a"].copy(),
            "shift_y_a": arrays["shift_y_a"].copy(), "score": np.zeros(n),
            "weight": np.ones(n), "percentile": np.ones(n), "angular_change_deg": np.zeros(n),
            "half": halves.astype(np.int64), "used": np.ones(n, bool),
            "defocus_group": np.zeros(n, np.int64), "defocus_change_a": np.zeros(n),
            "gray_scale": np.ones(n), "gray_offset": np.zeros(n), "magnification": np.ones(n)}


def with_poses(arrays: ParticleArrays, poses: dict[str, np.ndarray]) -> ParticleArrays:
    """``arrays`` with the orientations, shifts and halves of ``poses``."""
    columns = dict(arrays.columns)
    for name in ("rot_deg", "tilt_deg", "psi_deg", "shift_x_a", "shift_y_a", "half"):
        columns[name] = np.asarray(poses[name])
    change = poses.get("defocus_change_a")
    if change is not None:  # refined defocus, relative to the particles' own
        columns["defocus_u_a"] = arrays["defocus_u_a"] + change
        columns["defocus_v_a"] = arrays["defocus_v_a"] + change
    return replace(arrays, columns=columns)


def centre_offset_px(box_in_px: int, box_out_px: int) -> float:
    """Where a Fourier crop/pad from ``box_in_px`` to ``box_out_px`` puts the input's centre
    (index N//2), relative to the output's centre (index n//2), in output pixels, negated:
    the shift that brings it back. The crop keeps index 0 fixed, so for odd boxes the centre
    moves by up to half a pixel (65 → 64: 0.49 px); even → even boxes give 0."""
    return box_out_px // 2 - (box_in_px // 2) * box_out_px / box_in_px


def on_working_grid(arrays: ParticleArrays, stack: str, box_px: int, pixel_size_a: float
                    ) -> ParticleArrays:
    """The particles as the images of ``stack`` (row i = image i) at ``box_px``/``pixel``,
    their origins including the centre offset of the crop (``centre_offset_px``), so that
    image + origin is centred at box_px // 2 as in the original images."""
    columns = dict(arrays.columns)
    offset_a = centre_offset_px(arrays.box_px, box_px) * pixel_size_a
    columns["shift_x_a"] = arrays["shift_x_a"] + offset_a
    columns["shift_y_a"] = arrays["shift_y_a"] + offset_a
    columns["image_index"] = np.arange(len(arrays), dtype=np.int64)
    optics = arrays.optics.copy()
    optics["box_px"] = box_px
    optics["pixel_size_a"] = pixel_size_a
    paths = np.full(len(arrays), stack, dtype=object)
    return replace(arrays, paths=paths, columns=columns, optics=optics)
