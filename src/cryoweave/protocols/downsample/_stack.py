"""Disk-to-disk Fourier cropping of the images a particle table refers to.

Bounded memory (a few batches in flight), reading/computing/writing overlapped, one output
stack written atomically with int64 offsets, progress in images.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cryoweave.engine import (
    batch_size_for,
    fourier_crop,
    fourier_crop_working_bytes,
    free_device_memory_bytes,
    map_batches_with_oom_retry,
    to_device,
    to_host,
)
from cryoweave.formats import ParticleTable, StackReader, StackWriter
from cryoweave.protocols._shared.pipeline import run_pipeline

# images per pipeline job: small enough that reading and writing overlap from the start,
# large enough that the FFTs stay efficient (``batch_size`` is an upper bound)
JOB_IMAGES = 256


@dataclass(frozen=True)
class Batch:
    start: int  # first output index
    stop: int
    box_px: int  # input box of every image in the batch


@dataclass
class DownsampleStats:
    n_images: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.n_images / self.seconds if self.seconds > 0 else float("inf")


def plan_batches(input_boxes: np.ndarray, batch_size: int) -> Iterator[Batch]:
    """Consecutive rows with the same input box, at most ``batch_size`` each."""
    n = len(input_boxes)
    breaks = np.flatnonzero(input_boxes[1:] != input_boxes[:-1]) + 1
    for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, n], strict=True):
        for start in range(int(lo), int(hi), batch_size):
            yield Batch(start, min(start + batch_size, int(hi)), int(input_boxes[lo]))


def downsample_stack(table: ParticleTable, box_px: int, out_path: Path, voxel_size_a: float, *,
                     batch_size: int = 1000, device: str = "cpu", threads: int | None = None,
                     progress: Callable[[int, int], None] | None = None) -> DownsampleStats:
    """Fourier-crop every image of ``table`` (in row order) into one stack at ``out_path``."""
    parts = table.particles
    n = len(parts)
    paths = parts["image_path"].to_numpy(dtype=object)
    indices = parts["image_index"].to_numpy(dtype=np.int64)
    box_of_group = dict(zip(table.optics["group_id"].astype(int),
                            table.optics["box_px"].astype(int), strict=True))
    input_boxes = parts["optics_group"].astype(int).map(box_of_group).to_numpy()
    reader = StackReader()
    done = 0
    started = time.perf_counter()

    def read(batch: Batch) -> np.ndarray:
        return reader.read(paths[batch.start:batch.stop], indices[batch.start:batch.stop],
                           batch.box_px)

    def compute(batch: Batch, images: np.ndarray) -> np.ndarray:
        if device == "cpu":
            return fourier_crop(images, box_px, workers=threads)
        out = np.empty((len(images), box_px, box_px), np.float32)
        budget = free_device_memory_bytes(device) // 2
        fit = batch_size_for(fourier_crop_working_bytes(batch.box_px, box_px), budget,
                             len(images))
        for lo, hi, cropped in map_batches_with_oom_retry(
                lambda a, b: to_host(fourier_crop(to_device(images[a:b], device), box_px)),
                len(images), fit):
            out[lo:hi] = cropped
        return out

    with StackWriter(out_path, n, box_px, voxel_size_a) as writer:
        def write(batch: Batch, cropped: np.ndarray) -> None:
            nonlocal done
            writer.write(batch.start, cropped)
            done += len(cropped)
            if progress is not None:
                progress(done, n)

        run_pipeline(plan_batches(input_boxes, min(batch_size, JOB_IMAGES)), read, compute,
                     write)
    return DownsampleStats(n, time.perf_counter() - started)
