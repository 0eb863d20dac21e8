"""The Downsample protocol: Fourier-crop a particle set to a smaller even box."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import field_validator, model_validator

from cryoweave.errors import CryoweaveError
from cryoweave.physical import MAX_BATCH_IMAGES, PIXEL_SIZE_A
from cryoweave.plugin import (
    ADVANCED,
    Derived,
    Input,
    ParticleSet,
    Plan,
    PlanContext,
    Protocol,
    ProtocolOutputs,
    ProtocolParams,
    Step,
    StepContext,
    StepResult,
    SummaryContext,
    param,
)
from cryoweave.protocols._shared.params import datadir_param, strip_prefix_param
from cryoweave.protocols._shared.summary import set_summary

if TYPE_CHECKING:  # numpy, pandas, formats and the engine load on use: `form` needs none
    import numpy as np
    import pandas as pd

    from cryoweave.formats import ParticleTable

IMAGE_LIST = "tmp/downsample_input.npz"


class Downsample(Protocol):
    """Fourier-crop particle images to a smaller even box, once, to disk (RELION convention).

    Each optics group gets its exact new pixel size (old · D / d); shifts stay in Å and every
    other metadata column is kept. The stack is written once into the project cache
    (``Cache/downsample/``) and shared by every run that asks for the same images at the same
    box; a second identical request reuses it.
    """

    label = "downsample particles"
    import_options: ClassVar[dict[str, tuple[str, ...]]] = {
        "particles": ("datadir", "strip_prefix")}

    class Params(ProtocolParams):
        particles: Input[ParticleSet] = param(description="Particles to downsample",
                                              section="Input")
        box_px: int | None = param(None, gt=0, unit="px", section="Target",
                                   description="Target box (even, ≤ the input box)",
                                   title="Box size")
        pixel_size_a: float | None = param(
            None, **PIXEL_SIZE_A.bounds(), unit="Å", section="Target",
            description="Target pixel size instead of a box: the box is the even value "
                        "closest to it and the real resulting pixel size is recorded",
                        title="Pixel size")
        datadir: str | None = datadir_param()
        strip_prefix: str | None = strip_prefix_param()
        batch_size: int = param(1000, gt=0, le=MAX_BATCH_IMAGES, section="Performance",
                                expert=ADVANCED,
                                description="Images per batch (bounds memory)")
        use_cache: bool = param(True, section="Performance", expert=ADVANCED,
                                description="Reuse and fill the project cache")

        @field_validator("box_px")
        @classmethod
        def _even(cls, box_px: int | None) -> int | None:
            if box_px is not None and box_px % 2:
                raise ValueError(f"box_px={box_px} must be even (RELION boxes are even); "
                                 f"use {box_px + 1} or {box_px - 1}")
            return box_px

        @model_validator(mode="after")
        def _target(self) -> Downsample.Params:
            if self.box_px is None and self.pixel_size_a is None:
                raise ValueError("give box_px or pixel_size_a (the target)")
            if self.box_px is not None and self.pixel_size_a is not None:
                raise ValueError("give box_px or pixel_size_a, not both")
            return self

    class Outputs(ProtocolOutputs):
        particles: ParticleSet

    def check_inputs(self, params: Any, inputs: Mapping[str, Any]) -> list[str]:
        particles = inputs.get("particles")
        if particles is None:
            return []
        import pandas as pd

        from cryoweave.formats import ParticleTable
        from cryoweave.protocols.downsample._rewrite import target_box

        try:
            target_box(ParticleTable(pd.DataFrame(), particles.optics()), params.box_px,
                       params.pixel_size_a)
        except CryoweaveError as exc:
            return [str(exc)]
        return []

    def summary(self, ctx: SummaryContext) -> dict[str, Any]:
        return set_summary(ctx.output("particles"), "particles")

    def plan(self, params: Any, ctx: PlanContext) -> Plan:
        from cryoweave.formats import ParticleTable
        from cryoweave.protocols._shared.device import compute_resources
        from cryoweave.protocols.downsample._cache import cache_key
        from cryoweave.protocols.downsample._rewrite import stack_name, target_box

        particles: ParticleSet = ctx.input("particles")
        frame = particles.to_frame(columns=["image_path", "image_index", "optics_group"],
                                   with_extra=False)
        optics = particles.optics()
        table = ParticleTable(frame, optics)
        box = target_box(table, params.box_px, params.pixel_size_a)
        key = cache_key(table, box, params.datadir, params.strip_prefix)
        write_image_list(ctx.run_dir / IMAGE_LIST, frame, optics)
        if params.use_cache:
            cache_root = ctx.project.cache_dir / "downsample"
            stack = cache_root / key / stack_name(box)
        else:
            cache_root, stack = None, ctx.run_dir / "extra" / stack_name(box)
        layout = particles.properties.get("star_layout") or {}
        args = {"image_list": str(ctx.run_dir / IMAGE_LIST), "key": key, "box_px": box,
                "cache_root": str(cache_root) if cache_root else None, "stack": str(stack),
                "batch_size": params.batch_size, "star_layout": layout}
        return Plan(steps=[Step("downsample", downsample_step, args, outputs=[str(stack)],
                                resources=compute_resources(ctx, cpus=2),
                                label=f"downsample to {box} px")])


def write_image_list(path: Path, frame: pd.DataFrame, optics: pd.DataFrame) -> None:
    """What the step needs, without pickles: ids, stack paths (as codes), indices, optics."""
    import numpy as np
    import pandas as pd

    codes, uniques = pd.factorize(frame["image_path"])
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        np.savez(handle, item_id=frame["item_id"].to_numpy(np.int64),
                 path_code=codes.astype(np.int64), paths=np.asarray(uniques, dtype=str),
                 image_index=frame["image_index"].to_numpy(np.int64),
                 optics_group=frame["optics_group"].to_numpy(np.int64),
                 optics=np.asarray(optics.to_json(orient="records")))


def read_image_list(path: str) -> tuple[np.ndarray, ParticleTable]:
    import numpy as np
    import pandas as pd

    from cryoweave.formats import ParticleTable

    with np.load(path, allow_pickle=False) as data:
        frame = pd.DataFrame({"image_path": data["paths"][data["path_code"]].astype(object),
                              "image_index": data["image_index"],
                              "optics_group": data["optics_group"]})
        optics = pd.DataFrame(json.loads(str(data["optics"])))
        return data["item_id"], ParticleTable(frame, optics)


def downsample_step(ctx: StepContext, image_list: str, key: str, box_px: int,
                    cache_root: str | None, stack: str, batch_size: int,
                    star_layout: dict[str, Any]) -> StepResult:
    import numpy as np
    import pandas as pd

    from cryoweave.protocols._shared.device import device_info, step_device
    from cryoweave.protocols.downsample._cache import DownsampleCache
    from cryoweave.protocols.downsample._rewrite import downsampled_table, stack_name
    from cryoweave.protocols.downsample._stack import downsample_stack

    device = step_device(ctx)
    item_ids, table = read_image_list(image_list)
    out = downsampled_table(table, box_px, Path(stack))
    voxel = float(out.optics["pixel_size_a"].iloc[0])

    def build(target: Path) -> dict:
        stats = downsample_stack(table, box_px, target, voxel, batch_size=batch_size,
                                 device=device, threads=ctx.threads,
                                 progress=lambda done, total: ctx.progress(done, total))
        ctx.logger.info("downsampled %d images to %d px at %.0f images/s", stats.n_images,
                        box_px, stats.images_per_s)
        return {"n_images": stats.n_images, "box_px": box_px}

    if cache_root is not None:
        entry = DownsampleCache(Path(cache_root)).get_or_build(key, stack_name(box_px), build)
        hit = entry.hit
        if hit:
            ctx.logger.info("cache hit: %s", entry.folder)
    else:
        build(Path(stack))
        hit = False
    updates = pd.DataFrame({"item_id": item_ids, "image_path": str(stack),
                            "image_index": np.arange(len(item_ids), dtype=np.int64)})
    labels = [lb for lb in star_layout.get("particle_labels", []) if lb in out.particle_labels
              or lb not in ("rlnDetectorPixelSize", "rlnMagnification")]
    layout = {**star_layout, "particle_labels": labels}
    pixel_sizes = out.optics["pixel_size_a"].unique()
    properties = {"box_px": box_px, "star_layout": layout,
                  "pixel_size_a": float(pixel_sizes[0]) if len(pixel_sizes) == 1 else None}
    return StepResult(derive={"particles": Derived("particles", updates)},
                      optics={"particles": out.optics}, properties={"particles": properties},
                      info=device_info(device, images=len(item_ids), box_px=box_px,
                                       cache_hit=hit))
