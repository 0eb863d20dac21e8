"""ImportMicrographs: MRC micrographs matching a pattern, once or streaming from a folder."""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import model_validator

from cryoweave.errors import CryoweaveError
from cryoweave.formats import check_file_name, read_info
from cryoweave.physical import AMPLITUDE_CONTRAST, CS_MM, PIXEL_SIZE_A, VOLTAGE_KV
from cryoweave.plugin import (
    ADVANCED,
    MicrographSet,
    Plan,
    PlanContext,
    Protocol,
    ProtocolOutputs,
    ProtocolParams,
    Step,
    StepContext,
    StepResult,
    Watch,
    WorkUnit,
    param,
)


class ImportMicrographs(Protocol):
    """Import micrographs (MRC files) matching a glob pattern.

    In streaming mode the folder is watched during acquisition: a file is imported once its
    size has not changed for ``file_settle_s`` seconds (files still being written are
    skipped), new micrographs are published as they settle, and the output closes
    ``timeout_s`` seconds after the last new file or on ``cryoweave stop RUN``.
    """

    label = "import micrographs"

    class Params(ProtocolParams):
        pattern: str = param(description="Glob pattern of the micrograph files, e.g. "
                                         "'Movies/*.mrc'", section="Input")
        pixel_size_a: float | None = param(
            None, **PIXEL_SIZE_A.bounds(), unit="Å", section="Acquisition",
            description="Pixel size; taken from the MRC header when not given")
        voltage_kv: float = param(300.0, **VOLTAGE_KV.bounds(), unit="kV", section="Acquisition",
                                  description="Acceleration voltage")
        cs_mm: float = param(2.7, **CS_MM.bounds(), unit="mm", section="Acquisition",
                             description="Spherical aberration")
        amplitude_contrast: float = param(0.1, **AMPLITUDE_CONTRAST.bounds(), section="Acquisition",
                                          description="Amplitude contrast (fraction)")
        streaming: bool = param(False, section="Streaming",
                                description="Watch the folder for new files during acquisition")
        timeout_s: float = param(
            300.0, gt=0, unit="s", section="Streaming", visible_if={"streaming": True},
            description="Close the output after this long without a new file")
        file_settle_s: float = param(
            5.0, ge=0, unit="s", section="Streaming", visible_if={"streaming": True},
            expert=ADVANCED, description="A file is imported once its size has not changed "
                                         "for this long")
        batch_size: int = param(10, gt=0, section="Streaming", expert=ADVANCED,
                                description="Micrographs published per step")

        @model_validator(mode="after")
        def _pattern_is_mrc(self) -> ImportMicrographs.Params:
            if not self.pattern.lower().endswith((".mrc", "*", ".mrcs")):
                raise ValueError(f"parameter 'pattern': {self.pattern!r} should match MRC "
                                 "files, e.g. 'Micrographs/*.mrc'")
            return self

    class Outputs(ProtocolOutputs):
        micrographs: MicrographSet

    def check_inputs(self, params: Any, inputs: Mapping[str, Any]) -> list[str]:
        if params.streaming:
            folder = Path(params.pattern).parent
            if not folder.is_dir():
                return [f"parameter 'pattern': folder {folder} does not exist; create it "
                        "before starting a streaming import"]
            return []
        files = sorted(glob.glob(params.pattern))
        if not files:
            return [f"parameter 'pattern': no file matches {params.pattern!r}"]
        if params.pixel_size_a is None:
            try:
                pixel = read_info(files[0]).voxel_size_a
            except CryoweaveError as exc:
                return [str(exc)]
            if not pixel:
                return [f"{files[0]}: the MRC header has no pixel size; pass pixel_size_a"]
        return []

    def plan(self, params: Any, ctx: PlanContext) -> Plan:
        acquisition = {"voltage_kv": params.voltage_kv, "cs_mm": params.cs_mm,
                       "amplitude_contrast": params.amplitude_contrast}

        def make_step(units: list[WorkUnit], first_item_id: int) -> Step:
            paths = [u.data["path"] for u in units]
            return Step(f"import/{first_item_id:06d}", import_micrographs_step,
                        {"paths": paths, "first_item_id": first_item_id,
                         "pixel_size_a": params.pixel_size_a, "acquisition": acquisition},
                        label=f"import {len(paths)} micrographs")

        if not params.streaming:
            files = [str(Path(p).resolve()) for p in sorted(glob.glob(params.pattern))]
            return Plan(steps=[make_step([WorkUnit(p, {"path": p}) for p in files], 1)])
        watcher = SettledFiles(params.pattern, params.file_settle_s)
        return Plan(streams=[Watch(watcher.discover, make_step, timeout_s=params.timeout_s,
                                   interval_s=min(1.0, max(0.1, params.file_settle_s / 2)),
                                   batch_size=params.batch_size)])


class SettledFiles:
    """Files matching a pattern whose size has stayed the same for ``settle_s`` seconds."""

    def __init__(self, pattern: str, settle_s: float):
        self.pattern = pattern
        self.settle_s = settle_s
        self._seen: dict[str, tuple[int, float]] = {}  # path -> (size, since)

    def discover(self) -> list[WorkUnit]:
        now = time.monotonic()
        ready = []
        for path in sorted(glob.glob(self.pattern)):
            if os.path.basename(path).startswith("."):
                continue  # temporary files of atomic writers
            try:
                size = os.path.getsize(path)
            except OSError:
                continue
            previous = self._seen.get(path)
            if previous is None or previous[0] != size:
                self._seen[path] = (size, now)
                if self.settle_s > 0:
                    continue
            if size > 0 and now - self._seen[path][1] >= self.settle_s:
                resolved = str(Path(path).resolve())
                ready.append(WorkUnit(resolved, {"path": resolved}))
        return ready


def import_micrographs_step(ctx: StepContext, paths: list[str], first_item_id: int,
                            pixel_size_a: float | None, acquisition: dict[str, float]
                            ) -> StepResult:
    rows, failures = [], {}
    for offset, path in enumerate(paths):
        item_id = first_item_id + offset
        try:
            check_file_name(path)
            info = read_info(path)
            pixel = pixel_size_a or info.voxel_size_a
            if not pixel:
                raise CryoweaveError(f"{path}: the MRC header has no pixel size; pass "
                                     "pixel_size_a")
            if info.shape[0] != 1:
                raise CryoweaveError(f"{path}: expected one micrograph, found {info.shape[0]} "
                                     "sections (a movie? import aligned sums)")
            if not PIXEL_SIZE_A.contains(pixel):
                raise CryoweaveError(f"{path}: the header's pixel size {pixel:g} Å is out of "
                                     f"range ({PIXEL_SIZE_A.describe()}); pass pixel_size_a")
        except CryoweaveError as exc:
            failures[item_id] = str(exc)
            ctx.logger.error("micrograph %d: %s", item_id, exc)
            continue
        rows.append({"item_id": item_id, "path": path, "name": Path(path).stem,
                     "width_px": info.shape[2], "height_px": info.shape[1],
                     "pixel_size_a": pixel, "optics_group": 1})
    frame = pd.DataFrame(rows)
    props: dict[str, Any] = dict(acquisition)
    if rows:
        props["pixel_size_a"] = rows[0]["pixel_size_a"]
    return StepResult(publish={"micrographs": frame}, properties={"micrographs": props},
                      item_failures=failures,
                      info={"micrographs": len(rows), "failed": len(failures)})
