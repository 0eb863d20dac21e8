"""ImportVolume: an MRC map (optionally with half maps) becomes a volume set."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryoweave.errors import InputError
from cryoweave.formats import read_info
from cryoweave.physical import PIXEL_SIZE_A
from cryoweave.plugin import (
    Plan,
    PlanContext,
    Protocol,
    ProtocolOutputs,
    ProtocolParams,
    SetPreview,
    Step,
    StepContext,
    StepResult,
    SummaryContext,
    VolumeSet,
    param,
)
from cryoweave.protocols._shared.summary import set_summary


class ImportVolume(Protocol):
    """Import a 3-D map (MRC). The pixel size comes from ``pixel_size_a`` or the header."""

    label = "import volume"

    class Params(ProtocolParams):
        path: str = param(description="MRC map file", section="Input", path=True, title="Map file")
        pixel_size_a: float | None = param(
            None, **PIXEL_SIZE_A.bounds(), unit="Å", section="Input",
            description="Voxel size; taken from the MRC header when not given")
        half1_path: str | None = param(None, section="Input", expert=True, path=True,
                                       description="First half map (optional)", title="Half map 1")
        half2_path: str | None = param(None, section="Input", expert=True, path=True,
                                       description="Second half map (optional)", title="Half map 2")

    class Outputs(ProtocolOutputs):
        volume: VolumeSet

    def check_inputs(self, params: Any, inputs: Mapping[str, Any]) -> list[str]:
        problems = []
        for name in ("path", "half1_path", "half2_path"):
            value = getattr(params, name)
            if value is not None and not Path(value).is_file():
                problems.append(f"parameter {name!r}: file {value} not found")
        if (params.half1_path is None) != (params.half2_path is None):
            problems.append("give both half1_path and half2_path, or neither")
        return problems

    def summary(self, ctx: SummaryContext) -> dict[str, Any]:
        return set_summary(ctx.output("volume"), "volumes")

    def preview(self, params: Any) -> dict[str, SetPreview]:
        import pandas as pd

        halves = [p for p in (params.half1_path, params.half2_path) if p]
        row = volume_row(params.path, params.pixel_size_a, halves)
        return {"volume": SetPreview("volumes", {"pixel_size_a": row["pixel_size_a"],
                                                 "box_px": row["box_px"]},
                                     pd.DataFrame([row]))}

    def plan(self, params: Any, ctx: PlanContext) -> Plan:
        args = {"path": str(Path(params.path).resolve()), "pixel_size_a": params.pixel_size_a,
                "half_paths": [str(Path(p).resolve()) for p in (params.half1_path,
                                                                params.half2_path) if p]}
        return Plan(steps=[Step("import", import_volume_step, args, label="import volume")])


def volume_row(path: str, pixel_size_a: float | None, half_paths: list[str]) -> dict[str, Any]:
    """The volume item of a cubic MRC map (and its half maps), from the headers only."""
    info = read_info(path)
    nz, ny, nx = info.shape
    if nz == 1:
        raise InputError(f"{path}: a single 2-D image, not a volume")
    if not (nx == ny == nz):
        raise InputError(f"{path}: the map is {nx}×{ny}×{nz}; cubic maps are required")
    pixel = pixel_size_a or info.voxel_size_a
    if not pixel:
        raise InputError(f"{path}: the MRC header has no pixel size (0); pass pixel_size_a")
    if not PIXEL_SIZE_A.contains(pixel):
        raise InputError(f"{path}: the MRC header's pixel size {pixel:g} Å is out of range; "
                         f"expected {PIXEL_SIZE_A.describe()}; pass pixel_size_a")
    for half in half_paths:
        if read_info(half).shape != info.shape:
            raise InputError(f"{half}: the half map's size {read_info(half).shape} differs "
                             f"from the map's {info.shape}")
    return {"item_id": 1, "path": path, "pixel_size_a": pixel, "box_px": nx,
            "half1_path": half_paths[0] if half_paths else None,
            "half2_path": half_paths[1] if half_paths else None}


def import_volume_step(ctx: StepContext, path: str, pixel_size_a: float | None,
                       half_paths: list[str]) -> StepResult:
    import pandas as pd

    row = volume_row(path, pixel_size_a, half_paths)
    pixel, box = row["pixel_size_a"], row["box_px"]
    return StepResult(publish={"volume": pd.DataFrame([row])},
                      properties={"volume": {"pixel_size_a": pixel, "box_px": box}},
                      info={"box_px": box, "pixel_size_a": pixel})
