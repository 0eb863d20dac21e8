"""Disk-to-disk Fourier cropping of the images a particle table refers to.

On the CPU, one thread per core takes small jobs (``JOB_IMAGES``) and reads and crops each one
itself: a few images at a time (``FFT_CHUNK_BYTES``) into its own reused read buffer,
transformed by single-threaded FFTs while they are still in the core's cache, into an output
buffer reused from a written job. The calling thread writes the jobs in order, one positional
write each, while the workers crop the next ones (at most ``WINDOW`` jobs per worker ahead):
threads read while others compute and write, and memory is a few jobs per thread. On the GPU,
reading, computing and writing are three overlapped stages (`run_pipeline`). One output stack
written atomically with int64 offsets, progress in images.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cryoweave.engine import (
    batch_size_for,
    fft_workers,
    fourier_crop,
    fourier_crop_working_bytes,
    free_device_memory_bytes,
    map_batches_with_oom_retry,
    to_device,
    to_host,
)
from cryoweave.formats import ParticleTable, StackReader, StackWriter
from cryoweave.protocols._shared.pipeline import run_pipeline

# images per job: small enough that the FFTs' working set stays in cache and reading and
# writing overlap from the start, large enough to keep per-call overheads small
# (``batch_size`` is an upper bound)
JOB_IMAGES = 32
# input bytes per read and FFT call: a chunk and its spectra stay near one core's L2 cache
# (1 MiB per core on the benchmark machine). Transforming chunks is about 10 % faster than the
# whole job at once, and reading each chunk just before its FFTs (not the whole job first)
# saves the memory traffic of a job-sized buffer (`benchmarks/compare_trees.py --command
# downsample` measures such changes side by side)
FFT_CHUNK_BYTES = 1 << 20
# jobs per thread cropped ahead of the writer: memory stays a few jobs per thread
WINDOW = 3


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
    """Fourier-crop every image of ``table`` (in row order) into one stack at ``out_path``.

    threads: CPU threads (default `fft_workers()`, i.e. the cores); ignored on the GPU.
    """
    parts = table.particles
    n = len(parts)
    paths = parts["image_path"].to_numpy(dtype=object)
    indices = parts["image_index"].to_numpy(dtype=np.int64)
    box_of_group = dict(zip(table.optics["group_id"].astype(int),
                            table.optics["box_px"].astype(int), strict=True))
    input_boxes = parts["optics_group"].astype(int).map(box_of_group).to_numpy()
    job_images = min(batch_size, JOB_IMAGES)
    batches = plan_batches(input_boxes, job_images)
    started = time.perf_counter()
    with StackWriter(out_path, n, box_px, voxel_size_a) as writer:
        if device == "cpu":
            _crop_on_cpu(batches, job_images, paths, indices, box_px, writer,
                         threads or fft_workers(), progress)
        else:
            _crop_on_gpu(batches, paths, indices, box_px, writer, device, progress)
    return DownsampleStats(n, time.perf_counter() - started)


def _crop_on_cpu(batches: Iterator[Batch], job_images: int, paths: np.ndarray,
                 indices: np.ndarray, box_px: int, writer: StackWriter, threads: int,
                 progress: Callable[[int, int], None] | None) -> None:
    local = threading.local()  # per thread: a reader (open files) and read buffers
    readers: list[StackReader] = []
    free: list[np.ndarray] = []  # output buffers written and ready for reuse

    def job(batch: Batch) -> tuple[int, np.ndarray]:
        if not hasattr(local, "reader"):
            local.reader, local.buffers = StackReader(), {}
            readers.append(local.reader)
        count = batch.stop - batch.start  # at most job_images
        chunk = min(count, max(1, FFT_CHUNK_BYTES // (batch.box_px * batch.box_px * 4)))
        buffer = local.buffers.get(batch.box_px)
        if buffer is None or len(buffer) < chunk:
            buffer = np.empty((chunk, batch.box_px, batch.box_px), np.float32)
            local.buffers[batch.box_px] = buffer
        try:
            out = free.pop()
        except IndexError:
            out = np.empty((job_images, box_px, box_px), np.float32)
        cropped = out[:count]
        for lo in range(0, count, chunk):
            hi = min(count, lo + chunk)
            rows = slice(batch.start + lo, batch.start + hi)
            images = local.reader.read(paths[rows], indices[rows], batch.box_px,
                                       out=buffer[:hi - lo])
            cropped[lo:hi] = fourier_crop(images, box_px, workers=1)
        return batch.start, cropped

    # This thread writes, in order, while the workers crop the next jobs: workers writing
    # into one file take turns on its inode lock, and the kernel spins a waiting writer while
    # the holder copies into new page-cache pages (slow on a VM whose host has taken those
    # pages back: run 5 of a 6-run trial spent 40 % of its samples in that copy and 10 % in
    # the spin). At most WINDOW jobs per thread are queued or cropped and not yet written,
    # plus the one being written.
    done, n = 0, len(paths)
    pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="downsample")
    in_flight: deque[Future[tuple[int, np.ndarray]]] = deque()
    try:
        for batch in itertools.islice(batches, WINDOW * max(1, threads)):
            in_flight.append(pool.submit(job, batch))
        while in_flight:
            start, cropped = in_flight.popleft().result()
            following = next(batches, None)
            if following is not None:
                in_flight.append(pool.submit(job, following))
            writer.write(start, cropped)
            free.append(cropped.base)  # the job's whole output buffer
            done += len(cropped)
            if progress is not None:
                progress(done, n)
    finally:  # on an error (or Ctrl-C) the jobs not yet started are dropped
        pool.shutdown(wait=True, cancel_futures=True)
        for reader in readers:
            reader.close()


def _crop_on_gpu(batches: Iterator[Batch], paths: np.ndarray, indices: np.ndarray, box_px: int,
                 writer: StackWriter, device: str,
                 progress: Callable[[int, int], None] | None) -> None:
    reader = StackReader()
    done, n = 0, len(paths)

    def read(batch: Batch) -> np.ndarray:
        return reader.read(paths[batch.start:batch.stop], indices[batch.start:batch.stop],
                           batch.box_px)

    def compute(batch: Batch, images: np.ndarray) -> np.ndarray:
        out = np.empty((len(images), box_px, box_px), np.float32)
        budget = free_device_memory_bytes(device) // 2
        fit = batch_size_for(fourier_crop_working_bytes(batch.box_px, box_px), budget,
                             len(images))
        for lo, hi, cropped in map_batches_with_oom_retry(
                lambda a, b: to_host(fourier_crop(to_device(images[a:b], device), box_px)),
                len(images), fit):
            out[lo:hi] = cropped
        return out

    def write(batch: Batch, cropped: np.ndarray) -> None:
        nonlocal done
        writer.write(batch.start, cropped)
        done += len(cropped)
        if progress is not None:
            progress(done, n)

    run_pipeline(batches, read, compute, write)
