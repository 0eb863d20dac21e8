"""ProcessVolume: filters, resampling, masks, symmetry, hand and normalisation of one map."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import field_validator, model_validator

from cryoweave.engine import (
    apply_bfactor,
    flip_hand,
    lowpass_filter_a,
    normalize_volume,
    resample_volume,
    soft_sphere_mask,
    symmetrize_volume,
    threshold_mask,
)
from cryoweave.errors import InputError
from cryoweave.formats import read_volume, write_mrc
from cryoweave.physical import PIXEL_SIZE_A
from cryoweave.plugin import (
    ADVANCED,
    Input,
    Plan,
    PlanContext,
    Protocol,
    ProtocolOutputs,
    ProtocolParams,
    Step,
    StepContext,
    StepResult,
    SummaryContext,
    VolumeSet,
    param,
)
from cryoweave.protocols._shared.summary import set_summary
from cryoweave.protocols._shared.symmetry import check_symmetry

ORDER = ("resample", "symmetrize", "flip_hand", "lowpass", "bfactor", "threshold_mask",
         "normalize", "masks")


class ProcessVolume(Protocol):
    """Process one map. Every option is off unless given; those given are applied in this
    fixed order:

    1. resample: Fourier crop or pad to ``pixel_size_a`` (RELION's ``--rescale_angpix``: the
       new pixel size is exactly old·N/size), then window (crop or zero-pad about N//2) to
       ``box_px``;
    2. symmetrise: average over the operators of ``symmetry`` (RELION's axes);
    3. flip the hand: mirror through the xy plane about the centre;
    4. low-pass to ``lowpass_resolution_a`` with a raised-cosine edge of
       ``lowpass_edge_width_px`` Fourier pixels centred on the cutoff;
    5. B-factor: multiply the spectrum by exp(−B·s²/4) (s in 1/Å; B < 0 sharpens, B > 0
       blurs, as RELION);
    6. threshold mask: 1 where the map (as it is after steps 1–5) exceeds
       ``mask_threshold``, dilated by ``mask_dilation_a``, with a raised-cosine edge of
       ``mask_edge_width_a`` (``relion_mask_create``); published as the ``mask`` output, or
       multiplied into the map with ``mask_mode = apply``;
    7. normalise: mean 0 and standard deviation 1 over the whole map or over the background
       (the voxels beyond ``normalize_background_radius_a``, default half the box, from the
       centre); the statistics hold for the map before step 8;
    8. masks: the applied threshold mask, then the soft sphere of radius ``sphere_radius_a``
       with an edge of ``sphere_edge_width_a``.

    The output map's MRC header carries its pixel size.
    """

    label = "process volume"

    class Params(ProtocolParams):
        volume: Input[VolumeSet] = param(section="Input", description="The map to process")
        # 1. resample
        pixel_size_a: float | None = param(
            None, **PIXEL_SIZE_A.bounds(), unit="Å", section="Resample",
            description="New pixel size (Fourier crop or pad, RELION convention)")
        box_px: int | None = param(None, ge=8, le=2048, unit="px", section="Resample",
                                   description="New box (crop or zero-pad about the centre)",
                                   title="Box size")
        # 2–3. symmetry and hand
        symmetry: str | None = param(None, section="Symmetry and hand",
                                     description="Symmetrise to a group (c<n>, d<n>, t, o, "
                                                 "i, i1–i4)")
        flip_hand: bool = param(False, section="Symmetry and hand",
                                description="Invert the hand (mirror through the xy plane)")
        # 4–5. filters
        lowpass_resolution_a: float | None = param(
            None, ge=0.5, le=1000, unit="Å", section="Filters",
            description="Low-pass to this resolution (raised-cosine edge)",
            title="Low-pass resolution")
        lowpass_edge_width_px: float = param(
            2.0, ge=0, le=20, unit="Fourier px", section="Filters", expert=ADVANCED,
            description="Width of the low-pass edge, centred on the cutoff",
            title="Low-pass edge width")
        bfactor_a2: float | None = param(
            None, ge=-2000, le=2000, unit="Å²", section="Filters",
            description="B-factor: exp(−B·s²/4); negative sharpens, positive blurs",
            title="B-factor")
        # 6. threshold mask
        mask_threshold: float | None = param(
            None, ge=-1e6, le=1e6, section="Threshold mask",
            description="Make a mask where the map exceeds this value (map units)")
        mask_dilation_a: float = param(0.0, ge=0, le=200, unit="Å", section="Threshold mask",
                                       description="Grow the thresholded region by this much")
        mask_edge_width_a: float = param(6.0, ge=0, le=200, unit="Å", section="Threshold mask",
                                         description="Raised-cosine soft edge outside it")
        mask_mode: Literal["output", "apply"] = param(
            "output", section="Threshold mask",
            description="output: publish the mask as the 'mask' output; apply: multiply the "
                        "map by it")
        # 7. normalise
        normalize: Literal["none", "whole", "background"] = param(
            "none", section="Normalise",
            description="Mean 0, std 1 over the whole map or over the background")
        normalize_background_radius_a: float | None = param(
            None, gt=0, le=10000, unit="Å", section="Normalise", expert=ADVANCED,
            visible_if={"normalize": "background"},
            description="The background lies beyond this radius (default: half the box)",
            title="Background radius for normalization")
        # 8. spherical mask
        sphere_radius_a: float | None = param(
            None, gt=0, le=10000, unit="Å", section="Spherical mask",
            description="Multiply by a soft sphere of this radius about the centre")
        sphere_edge_width_a: float = param(6.0, ge=0, le=200, unit="Å",
                                           section="Spherical mask",
                                           description="Raised-cosine edge outside the radius")

        @field_validator("symmetry")
        @classmethod
        def _symmetry(cls, value: str | None) -> str | None:
            return None if value is None else check_symmetry(value)

        @model_validator(mode="after")
        def _something_to_do(self) -> ProcessVolume.Params:
            if not any(operations(self).values()):
                raise ValueError("no operation asked; give at least one of pixel_size_a, "
                                 "box_px, symmetry, flip_hand, lowpass_resolution_a, "
                                 "bfactor_a2, mask_threshold, normalize, sphere_radius_a")
            return self

    class Outputs(ProtocolOutputs):
        volume: VolumeSet
        mask: VolumeSet

    def check_inputs(self, params: Any, inputs: Mapping[str, Any]) -> list[str]:
        volume = inputs.get("volume")
        if volume is None:
            return []
        problems = []
        if volume.count() != 1:
            problems.append(f"the volume set has {volume.count()} maps; give one")
        pixel = volume.properties.get("pixel_size_a")
        problem = nyquist_problem(params.model_dump(), pixel) if pixel else None
        if problem:
            problems.append(problem)
        return problems

    def summary(self, ctx: SummaryContext) -> dict[str, Any]:
        summary = set_summary(ctx.output("volume"), "volumes")
        mask = ctx.output("mask")
        if mask is not None and mask.count():
            summary["masks"] = mask.count()
        return summary

    def plan(self, params: Any, ctx: PlanContext) -> Plan:
        row = ctx.input("volume").to_frame().iloc[0]
        settings = params.model_dump(exclude={"volume"})
        return Plan(steps=[Step("process", process_volume_step,
                                {"path": str(row["path"]),
                                 "pixel_size_a": float(row["pixel_size_a"]),
                                 "settings": settings},
                                outputs=["extra/volume.mrc"], label="process the map")])


def nyquist_problem(settings: Mapping[str, Any], pixel_size_a: float) -> str | None:
    """A message when the low-pass resolution is finer than Nyquist of the (resampled) map."""
    resolution = settings.get("lowpass_resolution_a")
    pixel = settings.get("pixel_size_a") or pixel_size_a
    if resolution is None or resolution >= 2 * pixel:
        return None
    return (f"lowpass_resolution_a={resolution} Å is beyond Nyquist ({2 * pixel:.3g} Å at "
            f"{pixel:.3g} Å/px); give a larger value")


def operations(params: Any) -> dict[str, bool]:
    """Which steps of :data:`ORDER` the params ask for."""
    return {
        "resample": params.pixel_size_a is not None or params.box_px is not None,
        "symmetrize": params.symmetry is not None and params.symmetry != "c1",
        "flip_hand": bool(params.flip_hand),
        "lowpass": params.lowpass_resolution_a is not None,
        "bfactor": params.bfactor_a2 is not None,
        "threshold_mask": params.mask_threshold is not None,
        "normalize": params.normalize != "none",
        "masks": params.sphere_radius_a is not None,
    }


def process_map(volume: np.ndarray, pixel_size_a: float,
                settings: Mapping[str, Any]) -> tuple[np.ndarray, float, np.ndarray | None]:
    """Apply the asked operations in :data:`ORDER`: (map, pixel size Å, threshold mask)."""
    s = dict(settings)
    volume = np.asarray(volume, np.float32)
    pixel = float(pixel_size_a)
    if s.get("pixel_size_a") is not None or s.get("box_px") is not None:
        volume, pixel = resample_volume(volume, pixel, s.get("pixel_size_a"), s.get("box_px"))
    if s.get("symmetry") and s["symmetry"] != "c1":
        volume = symmetrize_volume(volume, s["symmetry"])
    if s.get("flip_hand"):
        volume = flip_hand(volume)
    if s.get("lowpass_resolution_a") is not None:
        volume = lowpass_filter_a(volume, s["lowpass_resolution_a"], pixel,
                                  edge_width_px=s.get("lowpass_edge_width_px", 2.0))
    if s.get("bfactor_a2") is not None:
        volume = apply_bfactor(volume, s["bfactor_a2"], pixel)
    mask = None
    if s.get("mask_threshold") is not None:
        mask = threshold_mask(volume, s["mask_threshold"],
                              dilation_px=s.get("mask_dilation_a", 0.0) / pixel,
                              edge_width_px=s.get("mask_edge_width_a", 6.0) / pixel)
    if s.get("normalize", "none") != "none":
        radius = s.get("normalize_background_radius_a")
        volume = normalize_volume(volume, s["normalize"],
                                  background_radius_px=None if radius is None
                                  else radius / pixel)
    if mask is not None and s.get("mask_mode") == "apply":
        volume = volume * mask
    if s.get("sphere_radius_a") is not None:
        volume = volume * soft_sphere_mask(volume.shape[0], s["sphere_radius_a"] / pixel,
                                           edge_width_px=s.get("sphere_edge_width_a", 6.0)
                                           / pixel)
    return np.asarray(volume, np.float32), pixel, mask


def process_volume_step(ctx: StepContext, path: str, pixel_size_a: float,
                        settings: dict[str, Any]) -> StepResult:
    import pandas as pd

    problem = nyquist_problem(settings, pixel_size_a)
    if problem:
        raise InputError(problem)
    volume, _ = read_volume(path)
    result, pixel, mask = process_map(volume, pixel_size_a, settings)
    out = write_mrc(Path(ctx.extra_dir) / "volume.mrc", result, pixel)
    box = int(result.shape[0])
    publish = {"volume": pd.DataFrame([{"item_id": 1, "path": str(out),
                                        "pixel_size_a": pixel, "box_px": box}])}
    properties = {"volume": {"pixel_size_a": pixel, "box_px": box}}
    if mask is not None and settings.get("mask_mode") == "output":
        mask_path = write_mrc(Path(ctx.extra_dir) / "mask.mrc", mask, pixel)
        publish["mask"] = pd.DataFrame([{"item_id": 1, "path": str(mask_path),
                                         "pixel_size_a": pixel, "box_px": box}])
        properties["mask"] = {"pixel_size_a": pixel, "box_px": box}
    return StepResult(publish=publish, properties=properties,
                      info={"pixel_size_a": pixel, "box_px": box,
                            "min": float(result.min()), "max": float(result.max()),
                            "mean": float(result.mean()), "std": float(result.std())})
