"""ImportMicrographs: MRC micrographs matching a pattern, once or streaming from a folder."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import model_validator

from cryoweave.errors import CryoweaveError, InputError
from cryoweave.formats import MatchedFile, check_file_name, match_files, pattern_folder, read_info
from cryoweave.formats.mrc import HEADER_BYTES, header_implied_size
from cryoweave.physical import AMPLITUDE_CONTRAST, CS_MM, PIXEL_SIZE_A, VOLTAGE_KV
from cryoweave.plugin import (
    ADVANCED,
    MicrographSet,
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
    Watch,
    WorkUnit,
    param,
)
from cryoweave.protocols._shared.summary import set_summary


class ImportMicrographs(Protocol):
    """Import micrographs (MRC files) matching a glob pattern.

    Symbolic links are followed inside the pattern's folder (the part of the pattern before
    the first wildcard): a file reached by several names is imported once, under its real
    path. A link loop or a broken link is one failed item (while streaming, a broken link
    waits for its target until the output closes). A link that leads out of the folder is
    not followed by default: it is refused as a failed item naming the link and its target;
    set ``follow_external_links`` to import such files.

    In streaming mode the folder is watched during acquisition: a file is imported once its
    size has not changed for ``file_settle_s`` seconds and it is as long as its MRC header
    says (a shorter file is still being written: it waits, however long the writer pauses).
    New micrographs are published as they become ready, and the output closes ``timeout_s``
    seconds after the last new file or on ``cryoweave stop RUN``; a file still incomplete
    then is a failed item that says so.
    """

    label = "import micrographs"

    class Params(ProtocolParams):
        pattern: str = param(description="Glob pattern of the micrograph files, e.g. "
                                         "'Movies/*.mrc'", section="Input", path=True)
        pixel_size_a: float | None = param(
            None, **PIXEL_SIZE_A.bounds(), unit="Å", section="Acquisition", title="Pixel size",
            description="Pixel size; taken from the MRC header when not given")
        voltage_kv: float = param(300.0, **VOLTAGE_KV.bounds(), unit="kV", section="Acquisition",
                                  title="Voltage", description="Acceleration voltage")
        cs_mm: float = param(2.7, **CS_MM.bounds(), unit="mm", section="Acquisition",
                             title="Spherical aberration (Cs)",
                             description="Spherical aberration")
        amplitude_contrast: float = param(0.1, **AMPLITUDE_CONTRAST.bounds(), section="Acquisition",
                                          description="Amplitude contrast (fraction)")
        streaming: bool = param(False, section="Streaming",
                                description="Watch the folder for new files during acquisition")
        timeout_s: float = param(
            300.0, gt=0, le=7 * 86400, unit="s", section="Streaming",
            visible_if={"streaming": True},
            title="Close after no new file for",
            description="Close the output after this long without a new file")
        file_settle_s: float = param(
            5.0, ge=0, le=3600, unit="s", section="Streaming", visible_if={"streaming": True},
            expert=ADVANCED, description="A file is imported once its size has not changed "
                                         "for this long and it is as long as its MRC header "
                                         "says", title="File settle time")
        batch_size: int = param(10, gt=0, le=10_000, section="Streaming", expert=ADVANCED,
                                description="Micrographs published per step")
        follow_external_links: bool = param(
            False, section="Input", expert=ADVANCED,
            description="Import files reached through symbolic links that lead out of the "
                        "pattern's folder (by default such links are refused as failed items)")

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
            folder = pattern_folder(params.pattern)
            if not folder.is_dir():
                return [f"parameter 'pattern': folder {folder} does not exist; create it "
                        "before starting a streaming import"]
            return []
        files = match_files(params.pattern, follow_external_links=params.follow_external_links)
        if not files:
            return [f"parameter 'pattern': no file matches {params.pattern!r}"]
        usable = [m.real for m in files if m.real is not None]
        if not usable:
            return [f"parameter 'pattern': none of the {len(files)} file(s) matching "
                    f"{params.pattern!r} can be imported; the first: {files[0].problem}"]
        if params.pixel_size_a is None:
            try:
                pixel = read_info(usable[0]).voxel_size_a
            except CryoweaveError as exc:
                return [str(exc)]
            if not pixel:
                return [f"{usable[0]}: the MRC header has no pixel size; pass pixel_size_a"]
        return []

    def summary(self, ctx: SummaryContext) -> dict[str, Any]:
        summary = set_summary(ctx.output("micrographs"), "micrographs")
        return {**summary, "failed": ctx.total("failed")}

    def preview(self, params: Any) -> dict[str, SetPreview]:
        import pandas as pd

        acquisition = {"voltage_kv": params.voltage_kv, "cs_mm": params.cs_mm,
                       "amplitude_contrast": params.amplitude_contrast}
        if params.streaming:  # the files arrive later; each is checked when it settles
            return {"micrographs": SetPreview("micrographs", acquisition, state="open")}
        sizes, errors = [], []
        for matched in match_files(params.pattern,
                                   follow_external_links=params.follow_external_links):
            if matched.problem:
                errors.append(matched.problem)
                continue
            try:
                shape = check_micrograph(matched.path, params.pixel_size_a)[0].shape
                sizes.append({"item_id": len(sizes) + 1, "path": matched.path,
                              "width_px": shape[2], "height_px": shape[1]})
            except CryoweaveError as exc:
                errors.append(str(exc))
        if errors and not sizes:
            raise InputError(f"{params.pattern}: none of the {len(errors)} matching files is "
                             f"a readable MRC micrograph; the first: {errors[0]}")
        return {"micrographs": SetPreview("micrographs", acquisition, pd.DataFrame(sizes))}

    def plan(self, params: Any, ctx: PlanContext) -> Plan:
        acquisition = {"voltage_kv": params.voltage_kv, "cs_mm": params.cs_mm,
                       "amplitude_contrast": params.amplitude_contrast}

        def make_step(units: list[WorkUnit], first_item_id: int) -> Step:
            paths = [u.data["path"] for u in units]
            args: dict[str, Any] = {"paths": paths, "first_item_id": first_item_id,
                                    "pixel_size_a": params.pixel_size_a,
                                    "acquisition": acquisition}
            for note in ("refused", "unfinished"):  # only when present: same keys, same hash
                found = {u.data["path"]: u.data[note] for u in units if note in u.data}
                if found:
                    args[note] = found
            return Step(f"import/{first_item_id:06d}", import_micrographs_step, args,
                        label=f"import {len(paths)} micrographs")

        if not params.streaming:
            files = match_files(params.pattern,
                                follow_external_links=params.follow_external_links)
            return Plan(steps=[make_step([file_unit(m) for m in files], 1)])
        watcher = SettledFiles(params.pattern, params.file_settle_s,
                               params.follow_external_links)
        return Plan(streams=[Watch(watcher.discover, make_step, timeout_s=params.timeout_s,
                                   interval_s=min(1.0, max(0.1, params.file_settle_s / 2)),
                                   batch_size=params.batch_size,
                                   remaining=watcher.remaining)])


def file_unit(matched: MatchedFile, unfinished: str | None = None) -> WorkUnit:
    """The unit of a matched file: its real path, or the refusal of a link that has none."""
    if matched.real is None:
        return WorkUnit(matched.key, {"path": matched.path, "refused": matched.problem})
    data = {"path": matched.real}
    if unfinished is not None:
        data["unfinished"] = unfinished
    return WorkUnit(matched.key, data)


@dataclass
class _FileState:
    stamp: tuple[int, int]  # (size, mtime_ns)
    since: float  # monotonic time the stamp was first seen
    expected_bytes: int | None = None  # from the MRC header, once the stamp has settled
    header_read: bool = False


class SettledFiles:
    """Files matching a pattern that are complete, one unit per real file.

    A file is ready when its size and modification time have not changed for ``settle_s``
    seconds and it is at least as long as its MRC header says (a shorter file is still being
    written, however long the writer pauses). :meth:`remaining` gives, when the stream
    closes, every file not ready by then.
    """

    def __init__(self, pattern: str, settle_s: float, follow_external_links: bool = False):
        self.pattern = pattern
        self.settle_s = settle_s
        self.follow_external_links = follow_external_links
        self._state: dict[str, _FileState] = {}  # real path -> state

    def discover(self) -> list[WorkUnit]:
        return self._scan(closing=False)

    def remaining(self) -> list[WorkUnit]:
        """Every matching file, ready or not: a file not ready carries why (``unfinished``)."""
        return self._scan(closing=True)

    def _scan(self, closing: bool) -> list[WorkUnit]:
        now = time.monotonic()
        units = []
        for matched in match_files(self.pattern,
                                   follow_external_links=self.follow_external_links):
            if os.path.basename(matched.path).startswith("."):
                continue  # temporary files of atomic writers
            if matched.real is None:
                # a missing target may still appear; a loop or an outside link will not change
                if not matched.missing or (closing and os.path.islink(matched.path)):
                    units.append(file_unit(matched))
                continue
            try:
                waiting = self._waiting(matched.real, now)
            except OSError:
                continue  # gone since it was listed
            if waiting is None:
                units.append(file_unit(matched))
            elif closing:
                units.append(file_unit(matched, f"when the streaming import closed, {waiting}; "
                                                "import it again once it is complete"))
        return units

    def _waiting(self, path: str, now: float) -> str | None:
        """Why ``path`` is not ready yet, or None when it is."""
        stat = os.stat(path)
        size = stat.st_size
        stamp = (size, stat.st_mtime_ns)
        state = self._state.get(path)
        if state is None or state.stamp != stamp:
            state = self._state[path] = _FileState(stamp, now)
        if size == 0:
            return "it was empty"
        if now - state.since < self.settle_s:
            return f"it had changed less than {self.settle_s:g} s before"
        if size < HEADER_BYTES:
            return f"it had {size} bytes, less than an MRC header ({HEADER_BYTES})"
        if not state.header_read:
            state.expected_bytes = header_implied_size(path)
            state.header_read = True
        if state.expected_bytes is not None and size < state.expected_bytes:
            return f"it had {size} of the {state.expected_bytes} bytes its MRC header describes"
        return None


def import_micrographs_step(ctx: StepContext, paths: list[str], first_item_id: int,
                            pixel_size_a: float | None, acquisition: dict[str, float],
                            refused: dict[str, str] | None = None,
                            unfinished: dict[str, str] | None = None) -> StepResult:
    """Read the headers of ``paths`` (item ids from ``first_item_id``) into micrograph rows.

    ``refused`` maps paths to why they cannot be imported (failed items without reading);
    ``unfinished`` maps paths to why a stream closed before they were ready (added to the
    message when the file cannot be read).
    """
    import pandas as pd

    rows, failures = [], {}
    refused, unfinished = refused or {}, unfinished or {}
    for offset, path in enumerate(paths):
        item_id = first_item_id + offset
        try:
            if path in refused:
                raise CryoweaveError(refused[path])
            info, pixel = check_micrograph(path, pixel_size_a)
        except CryoweaveError as exc:
            message = str(exc)
            if path in unfinished:
                message = f"{message}; {unfinished[path]}"
            failures[item_id] = message
            ctx.logger.error("micrograph %d: %s", item_id, message)
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


def check_micrograph(path: str, pixel_size_a: float | None) -> tuple[Any, float]:
    """The header of one micrograph file and its pixel size (Å), or CryoweaveError saying
    why it cannot be imported: the same rules when a run is checked and when it imports."""
    check_file_name(path)
    info = read_info(path)
    pixel = pixel_size_a or info.voxel_size_a
    if not pixel:
        raise CryoweaveError(f"{path}: the MRC header has no pixel size; pass pixel_size_a")
    if info.shape[0] != 1:
        raise CryoweaveError(f"{path}: expected one micrograph, found {info.shape[0]} "
                             "sections (a movie? import aligned sums)")
    if not PIXEL_SIZE_A.contains(pixel):
        raise CryoweaveError(f"{path}: the header's pixel size {pixel:g} Å is out of "
                             f"range ({PIXEL_SIZE_A.describe()}); pass pixel_size_a")
    return info, pixel
