"""The step of PreprocessMicrographs: read, preprocess, write each micrograph (overlapped)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cryoweave.engine import PreprocessSettings, preprocess_micrographs
from cryoweave.errors import CryoweaveError
from cryoweave.formats import read_image, write_mrc
from cryoweave.plugin import StepContext, StepResult
from cryoweave.protocols._shared.device import device_info, step_device, to_device, to_host
from cryoweave.protocols._shared.pipeline import run_pipeline

OUTPUT_DIR = "extra/micrographs"


def output_name(item: dict[str, Any]) -> str:
    """The output file of an item (the item id keeps names from different folders apart)."""
    name = item.get("name") or Path(item["path"]).stem
    return f"{int(item['item_id']):06d}_{name}.mrc"


def preprocess_step(ctx: StepContext, items: list[dict[str, Any]], settings: dict[str, Any],
                    acquisition: dict[str, Any]) -> StepResult:
    import pandas as pd

    device = step_device(ctx)
    chosen = PreprocessSettings(**settings)
    published: list[dict[str, Any]] = []
    failures: dict[int, str] = {}
    excused: list[str] = []
    out_dir = ctx.run_dir / OUTPUT_DIR

    def read(item: dict[str, Any]) -> Any:
        try:
            return read_image(item["path"])
        except CryoweaveError as exc:
            return exc

    def compute(item: dict[str, Any], data: Any) -> Any:
        if isinstance(data, Exception):
            return data
        image, _header_pixel_a = data
        try:
            source = to_device(image, device)
            result, factors = preprocess_micrographs(source, chosen, workers=ctx.threads)
            return to_host(result), factors
        except ValueError as exc:
            return CryoweaveError(f"{item['path']}: {exc}")

    def write(item: dict[str, Any], outcome: Any) -> None:
        relative = f"{OUTPUT_DIR}/{output_name(item)}"
        if isinstance(outcome, Exception):
            failures[int(item["item_id"])] = str(outcome)
            excused.append(relative)
            ctx.logger.error("micrograph %s: %s", item["item_id"], outcome)
            return
        image, (factor_x, factor_y) = outcome
        pixel = float(item.get("pixel_size_a") or acquisition.get("pixel_size_a") or 0.0)
        out_pixel = pixel * factor_x
        write_mrc(out_dir / output_name(item), image, out_pixel)
        row = dict(item, path=str(out_dir / output_name(item)), pixel_size_a=out_pixel,
                   width_px=int(image.shape[1]), height_px=int(image.shape[0]))
        if not np.isclose(factor_x, factor_y, rtol=1e-9, atol=0):
            row["pixel_size_y_a"] = pixel * factor_y  # non-square: both recorded
        published.append(row)
        ctx.progress(len(published) + len(failures), len(items))

    out_dir.mkdir(parents=True, exist_ok=True)
    run_pipeline(items, read, compute, write)
    frame = pd.DataFrame(published)
    properties = {k: v for k, v in acquisition.items() if v is not None}
    if published:
        properties["pixel_size_a"] = published[0]["pixel_size_a"]
    return StepResult(publish={"micrographs": frame}, properties={"micrographs": properties},
                      item_failures=failures, excused_outputs=excused,
                      info=device_info(device, micrographs=len(published),
                                       failed=len(failures)))
