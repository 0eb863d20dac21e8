"""Reconstruction from known poses: insert halves, then maps, FSC and pictures."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cryoweave.engine import (
    FscCurve,
    ReconstructionAccumulator,
    array_namespace,
    fsc,
    lowpass_filter_a,
    reconstruct_maps,
)
from cryoweave.formats import StackReader, write_mrc
from cryoweave.protocols._shared.device import namespace, to_device, to_host
from cryoweave.protocols._shared.particle_arrays import ParticleArrays
from cryoweave.viewers import plot_fsc, plot_volume


def empty_accumulator(arrays: ParticleArrays, *, half: int | None, padding: float,
                      max_resolution_a: float | None, device: str = "cpu"
                      ) -> ReconstructionAccumulator:
    """Zero sums on ``device`` ("cpu" or "gpu")."""
    r_max = None
    if max_resolution_a:
        r_max = arrays.box_px * arrays.pixel_size_a / max_resolution_a
    return ReconstructionAccumulator.empty(arrays.box_px, padding=padding, r_max_px=r_max,
                                           half=half, xp=namespace(device))


def insert_particles(accumulator: ReconstructionAccumulator, arrays: ParticleArrays,
                     rows: np.ndarray, *, symmetry: str, batch_size: int = 500,
                     weights: np.ndarray | None = None,
                     progress: Callable[[int, int], None] | None = None,
                     device: str = "cpu") -> None:
    """Back-project the particles ``rows`` (indices into ``arrays``) into ``accumulator``.

    Each batch (images, poses, CTFs, origins, weights) moves to ``device`` once, where the
    accumulator's sums live.
    """
    reader = StackReader()
    order = rows[np.lexsort((arrays["image_index"][rows], arrays.paths[rows].astype(str)))]
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        images = reader.read(arrays.paths[batch], arrays["image_index"][batch], arrays.box_px)
        accumulator.insert(to_device(images, device), to_device(arrays.matrices(batch), device),
                           ctf=to_device(arrays.ctf(batch), device),
                           origin_xy_px=to_device(arrays.origins_px(batch), device),
                           symmetry=symmetry,
                           particle_weights=None if weights is None
                           else to_device(weights[batch], device))
        if progress is not None:
            progress(min(start + batch_size, len(order)), len(order))


def save_accumulator(path: Path, accumulator: ReconstructionAccumulator) -> None:
    """The sums as the ``.npy`` ``path`` (memory-mapped by `load_accumulator`: no copy, no
    zip checksums), their count and half in ``path`` + ``.json``; the ``.npy`` appears last,
    complete, so its presence means both are there."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = path.with_name(path.name + ".json")
    meta.write_text(json.dumps({"n_images": accumulator.n_images,
                                "half": accumulator.half or 0}))
    tmp = path.with_name(f".{path.name}.part")
    try:
        with open(tmp, "wb") as handle:
            np.save(handle, to_host(accumulator.sums), allow_pickle=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # a failed write (disk full) leaves no partial file


def load_accumulator(path: Path, template: ReconstructionAccumulator, device: str = "cpu"
                     ) -> ReconstructionAccumulator:
    """The accumulator `save_accumulator` wrote (on the CPU its sums are a read-only memory
    map of the file). A ``.npz`` of the same name (written by earlier versions) is read when the
    ``.npy`` is absent, so runs interrupted then continue."""
    path = Path(path)
    legacy = path.with_suffix(".npz")
    if not path.exists() and legacy.exists():
        with np.load(legacy) as data:
            return dataclasses.replace(template, sums=to_device(data["sums"], device),
                                       n_images=int(data["n_images"]),
                                       half=int(data["half"]) or None)
    meta = json.loads(path.with_name(path.name + ".json").read_text())
    sums = np.load(path, mmap_mode="r" if device == "cpu" else None, allow_pickle=False)
    return dataclasses.replace(template, sums=to_device(sums, device),
                               n_images=int(meta["n_images"]), half=int(meta["half"]) or None)


def resolutions(curve: FscCurve) -> dict[str, float]:
    """Resolution (Å) at 0.143 and 0.5, interpolated and first shell below (Xmipp); never
    finer than the low-pass the maps share (``curve.filter_resolution_a``)."""
    return {f"{name}_{method}": curve.resolution_a(threshold, method=method)
            for name, threshold in (("fsc0143", 0.143), ("fsc05", 0.5))
            for method in ("interpolated", "first_below")}


def limits(curve: FscCurve) -> dict[str, str | None]:
    """Per criterion, what bounds the resolution instead of an FSC crossing: "filter" (the
    low-pass cut-off), "nyquist" (the FSC never falls below), or None."""
    return {name: curve.limited_by(threshold)
            for name, threshold in (("fsc0143", 0.143), ("fsc05", 0.5))}


def describe_resolution(curve: FscCurve, threshold: float) -> str:
    """E.g. "20.00 Å (limited by the 20.00 Å filter: ...)" for logs and plot titles."""
    text = f"{curve.resolution_a(threshold):.2f} Å"
    limit = curve.limited_by(threshold)
    if limit == "filter":
        text += (f" (limited by the {curve.filter_resolution_a:.2f} Å filter: the FSC does "
                 f"not fall below {threshold:g} before the cut-off)")
    elif limit == "nyquist":
        text += f" (limited by Nyquist: the FSC does not fall below {threshold:g})"
    return text


def curve_record(curve: FscCurve, **extra: Any) -> dict[str, Any]:
    return {"frequency_per_a": curve.frequency_per_a.tolist(), "fsc": curve.values.tolist(),
            "shell_px": curve.shell_px.tolist(), "resolutions_a": resolutions(curve),
            "filter_resolution_a": curve.filter_resolution_a,
            "resolution_limited_by": limits(curve), **extra}


def write_results(folder: Path, half1: Any, half2: Any, average: Any,
                  pixel_size_a: float, curve: FscCurve, *, prefix: str = "") -> dict[str, str]:
    """Maps (halves, average, filtered at the 0.143 resolution), FSC JSON and pictures.

    The maps may live on the GPU: the filter runs there, the files are written from the host.
    """
    res = curve.resolution_a(0.143)
    filtered = lowpass_filter_a(average, res, pixel_size_a) if res < np.inf else average
    half1, half2, average, filtered = (to_host(m) for m in (half1, half2, average, filtered))
    files = {
        "half1_path": write_mrc(folder / f"{prefix}half1.mrc", half1, pixel_size_a),
        "half2_path": write_mrc(folder / f"{prefix}half2.mrc", half2, pixel_size_a),
        "path": write_mrc(folder / f"{prefix}map.mrc", average, pixel_size_a),
        "filtered_path": write_mrc(folder / f"{prefix}map_filtered.mrc", filtered,
                                   pixel_size_a),
    }
    (folder / f"{prefix}fsc.json").write_text(json.dumps(curve_record(curve), indent=1))
    files["fsc_json"] = folder / f"{prefix}fsc.json"
    files["fsc_png"] = plot_fsc({"half maps": (curve.frequency_per_a, curve.values)},
                                folder / f"{prefix}fsc.png",
                                title=f"FSC 0.143: {res:.2f} Å, 0.5: "
                                      f"{curve.resolution_a(0.5):.2f} Å"
                                      + (f" (filter {curve.filter_resolution_a:.2f} Å)"
                                         if curve.filter_resolution_a else ""))
    files["slices_png"] = plot_volume(average, pixel_size_a, folder / f"{prefix}slices.png",
                                      title="reconstruction")
    files["projections_png"] = plot_volume(average, pixel_size_a,
                                           folder / f"{prefix}projections.png",
                                           title="reconstruction", mode="projections")
    return {k: str(v) for k, v in files.items()}


def half_maps(acc1: ReconstructionAccumulator, acc2: ReconstructionAccumulator, *,
              regularization: float, gridding_iterations: int = 10, threads: int = 1
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both half maps and the map of all particles: three independent gridding solves, all
    written, up to ``threads`` of them side by side (`reconstruct_maps`; same maps)."""
    half1, half2, average = reconstruct_maps(
        [acc1, acc2, (acc1, acc2)], threads=threads, regularization=regularization,
        gridding_iterations=gridding_iterations)
    return half1, half2, average


def evaluate(half1: Any, half2: Any, pixel_size_a: float, mask: np.ndarray | None = None,
             *, max_resolution_a: float | None = None) -> FscCurve:
    """The half-map FSC, on the device where the maps live (the mask is moved there); with
    ``max_resolution_a`` (the insertion cut-off both halves share) zero beyond it and never
    finer than it (``FscCurve.limited_to``)."""
    if mask is not None:
        mask = to_device(mask, "cpu" if array_namespace(half1) is np else "gpu")
    curve = fsc(half1, half2, mask=mask, pixel_size_a=pixel_size_a)
    return curve.limited_to(max_resolution_a)
