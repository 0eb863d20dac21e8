"""MRC images, stacks and volumes via ``mrcfile`` (memory-mapped, voxel size always written).

Arrays are ``(n, y, x)`` for stacks and ``(z, y, x)`` for volumes, float32 unless stated.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import mrcfile
import numpy as np

from cryoweave.errors import InputError
from cryoweave.formats._atomic import temporary_path

HEADER_BYTES = 1024
MAX_OPEN_STACKS = 128
# real-valued modes, read as float32 (complex modes 3/4 and packed 4-bit mode 101 are not
# image data we can use)
_MODE_DTYPES = {0: np.int8, 1: np.int16, 2: np.float32, 6: np.uint16, 12: np.float16}
SUPPORTED_MODES = ", ".join(f"{m} ({np.dtype(d).name})" for m, d in _MODE_DTYPES.items())


@dataclass(frozen=True)
class MrcInfo:
    """Header facts of an MRC file."""

    path: Path
    shape: tuple[int, int, int]  # (nz, ny, nx); nz = number of images for a stack
    voxel_size_a: float  # 0.0 when the header has none
    mode: int
    data_offset: int
    is_volume: bool

    @property
    def n_images(self) -> int:
        return self.shape[0]

    @property
    def box_px(self) -> int:
        return self.shape[-1]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(_MODE_DTYPES[self.mode]).newbyteorder("<")


def read_info(path: str | Path) -> MrcInfo:
    """Read and check the header; a missing, non-MRC or truncated file raises InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.open(path, header_only=True, permissive=True) as mrc:
                header = mrc.header
                ext_bytes = int(header.nsymbt)
                nx, ny, nz = int(header.nx), int(header.ny), int(header.nz)
                mode = int(header.mode)
                # the header holds float32: take the shortest decimal that round-trips
                voxel = float(str(np.float32(mrc.voxel_size.x)))
                is_volume = int(header.ispg) != 0 and nz > 1
                byte_order = header.mode.dtype.byteorder
    except (ValueError, OSError) as exc:
        raise InputError(f"{path}: not a readable MRC file ({exc})") from exc
    if mode not in _MODE_DTYPES:
        raise InputError(f"{path}: unsupported MRC mode {mode}; supported modes are "
                         f"{SUPPORTED_MODES}; convert the file (e.g. to mode 2, float32)")
    if min(nx, ny, nz) < 1 or ext_bytes < 0:
        raise InputError(f"{path}: invalid MRC header (size {nx}×{ny}×{nz}, extended header "
                         f"{ext_bytes} bytes)")
    itemsize = np.dtype(_MODE_DTYPES[mode]).itemsize
    offset = HEADER_BYTES + ext_bytes
    expected = offset + nx * ny * nz * itemsize
    actual = os.path.getsize(path)
    if actual < expected:
        raise InputError(
            f"{path}: truncated MRC file: the header describes {nz}×{ny}×{nx} values of mode "
            f"{mode} ({expected} bytes with the header) but the file has {actual} bytes; "
            "the file is incomplete or still being written"
        )
    if actual > expected:
        # as mrcfile.validate: a longer file has another mode or size than its header says
        raise InputError(
            f"{path}: the MRC header describes {nz}×{ny}×{nx} values of mode {mode} "
            f"({expected} bytes with the header) but the file has {actual} bytes; the header "
            "(mode or size) does not match the data; rewrite the file with a correct header"
        )
    if byte_order == ">":
        raise InputError(f"{path}: big-endian MRC files are not supported; convert it first")
    return MrcInfo(path, (nz, ny, nx), voxel if voxel > 0 else 0.0, mode, offset, is_volume)


def open_stack(path: str | Path) -> np.memmap:
    """Memory-map an image stack (or a single image) as ``(n, y, x)`` of its stored dtype."""
    info = read_info(path)
    return np.memmap(info.path, dtype=info.dtype, mode="r", offset=info.data_offset,
                     shape=info.shape)


def read_images(path: str | Path, indices: np.ndarray | list[int] | None = None) -> np.ndarray:
    """Images of a stack as float32 ``(n, y, x)``; ``indices`` are 0-based."""
    stack = open_stack(path)
    data = stack if indices is None else stack[np.asarray(indices, dtype=np.int64)]
    return np.asarray(data, dtype=np.float32)


def read_image(path: str | Path) -> tuple[np.ndarray, float]:
    """A single 2-D image (micrograph) as float32 ``(y, x)`` and its pixel size in Å."""
    info = read_info(path)
    if info.shape[0] != 1:
        raise InputError(f"{path}: expected a single image, found {info.shape[0]} sections")
    return read_images(path)[0], info.voxel_size_a


def read_volume(path: str | Path) -> tuple[np.ndarray, float]:
    """A volume as float32 ``(z, y, x)`` and its voxel size in Å (0.0 if the header has none).

    Maps whose header stores the axes in another order (MAPC/MAPR/MAPS ≠ 1/2/3, as some
    crystallographic maps do) are transposed to (z, y, x).
    """
    info = read_info(path)
    data = np.asarray(open_stack(path), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mrcfile.open(info.path, header_only=True, permissive=True) as mrc:
            order = (int(mrc.header.maps), int(mrc.header.mapr), int(mrc.header.mapc))
    if sorted(order) == [1, 2, 3] and order != (3, 2, 1):
        # array axes hold physical axes (maps, mapr, mapc); we want (z=3, y=2, x=1)
        data = np.ascontiguousarray(np.transpose(data, [order.index(a) for a in (3, 2, 1)]))
    return data, info.voxel_size_a


def _set_header(mrc: mrcfile.mrcfile.MrcFile, voxel_size_a: float, volume: bool) -> None:
    if mrc.data is not None and mrc.data.ndim == 3:
        if volume:
            mrc.set_volume()
        else:
            mrc.set_image_stack()
    mrc.voxel_size = float(voxel_size_a)


def write_mrc(path: str | Path, data: np.ndarray, voxel_size_a: float, *,
              volume: bool | None = None) -> Path:
    """Write float32 ``data`` atomically with the voxel size in the header.

    2-D data is one image; 3-D is a volume when ``volume`` (default: cubic), else a stack.
    """
    path = Path(path)
    array = np.ascontiguousarray(data, dtype=np.float32)
    if volume is None:
        volume = array.ndim == 3 and len(set(array.shape)) == 1
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(array)
            _set_header(mrc, voxel_size_a, volume and array.ndim == 3)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


class StackWriter:
    """Write an ``(n, box, box)`` float32 stack in batches, atomically.

    The data goes to a temporary file with positional writes at int64 offsets (stacks over
    4 GiB work; no memory map, so closing does not wait for the disk); the header statistics
    are accumulated while writing and the header is written last; on a clean exit the file is
    renamed into place, on an error it is removed. ``write`` is thread-safe: threads may write
    their own ranges at the same time.
    """

    def __init__(self, path: str | Path, n_images: int, box_px: int, voxel_size_a: float,
                 shape_yx: tuple[int, int] | None = None):
        self.path = Path(path)
        self.shape = (n_images, *(shape_yx or (box_px, box_px)))
        self.voxel_size_a = voxel_size_a
        self._tmp = temporary_path(self.path)
        self._min = np.inf
        self._max = -np.inf
        self._sum = 0.0
        self._sumsq = 0.0
        self._written = 0
        self._fd: int | None = None
        self._lock = threading.Lock()
        self._header = _stack_header(self.shape, voxel_size_a)
        self._image_bytes = self.shape[1] * self.shape[2] * 4

    def __enter__(self) -> StackWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            os.ftruncate(self._fd, HEADER_BYTES + self.shape[0] * self._image_bytes)
        except BaseException:
            self._discard()
            raise
        return self

    def write(self, start: int, images: np.ndarray) -> None:
        """Write images ``[start, start + len(images))``."""
        assert self._fd is not None
        images = np.ascontiguousarray(images, dtype=np.float32)
        if start < 0 or start + len(images) > self.shape[0] or images.shape[1:] != self.shape[1:]:
            raise ValueError(f"{self.path}: images {start}–{start + len(images)} of shape "
                             f"{images.shape[1:]} do not fit a stack of {self.shape}")
        _pwrite_all(self._fd, memoryview(images).cast("B"),
                    HEADER_BYTES + start * self._image_bytes)
        if not images.size:
            return
        low, high = float(images.min()), float(images.max())
        # per-image sums in float32 (no float64 copy of the batch), totals in float64
        total = float(images.sum(axis=(-2, -1), dtype=np.float64).sum())
        squares = float(np.einsum("...ij,...ij->...", images, images).sum(dtype=np.float64))
        with self._lock:
            self._min, self._max = min(self._min, low), max(self._max, high)
            self._sum += total
            self._sumsq += squares
            self._written += len(images)

    def _discard(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._tmp.unlink(missing_ok=True)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None or self._fd is None:
            self._discard()
            return
        try:
            if self._written != self.shape[0]:
                raise RuntimeError(
                    f"{self.path}: {self._written} of {self.shape[0]} images were written")
            count = float(np.prod(self.shape))
            mean = self._sum / count if count else 0.0
            header = self._header
            header.dmin, header.dmax, header.dmean = self._min, self._max, mean
            header.rms = float(np.sqrt(max(self._sumsq / count - mean * mean, 0.0)))
            _pwrite_all(self._fd, memoryview(header.tobytes()), 0)
            os.close(self._fd)
            self._fd = None
            os.replace(self._tmp, self.path)
        except BaseException:
            self._discard()
            raise


def _stack_header(shape: tuple[int, int, int], voxel_size_a: float) -> np.recarray:
    """The MRC header mrcfile writes for a float32 image stack of ``shape`` (statistics
    unset), without an array of that size."""
    from mrcfile.mrcinterpreter import MrcInterpreter

    mrc = MrcInterpreter()
    mrc._create_default_attributes()
    mrc.set_data(np.zeros((1, *shape[1:]), dtype=np.float32))
    mrc.set_image_stack()
    mrc.voxel_size = float(voxel_size_a)
    header = mrc.header.copy()
    header.nz = shape[0]
    return header


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    """``os.pwrite`` until every byte is written (one call may write less)."""
    while len(data):
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


class StackReader:
    """Gather images by (path, 0-based index) from stacks, keeping recent files open.

    Runs of consecutive indices in one stack are read with a single ``readinto`` (about twice
    as fast as fancy indexing through a memory map); scattered indices use the memory map.
    One reader per thread: the open files' positions are shared state.
    """

    def __init__(self) -> None:
        self._maps: OrderedDict[str, tuple[np.memmap, MrcInfo, Any]] = OrderedDict()

    def _open(self, path: str) -> tuple[np.memmap, MrcInfo, Any]:
        if path in self._maps:
            self._maps.move_to_end(path)
            return self._maps[path]
        if len(self._maps) >= MAX_OPEN_STACKS:
            _, (_, _, handle) = self._maps.popitem(last=False)
            handle.close()
        info = read_info(path)
        stack = np.memmap(info.path, dtype=info.dtype, mode="r", offset=info.data_offset,
                          shape=info.shape)
        self._maps[path] = (stack, info, open(info.path, "rb"))  # noqa: SIM115 (kept open)
        return self._maps[path]

    def read(self, paths: np.ndarray, indices: np.ndarray, box_px: int,
             out: np.ndarray | None = None) -> np.ndarray:
        """Images ``(len(paths), box_px, box_px)`` float32; into ``out`` (C-contiguous float32
        of that shape) when given, so a caller can reuse one buffer."""
        shape = (len(paths), box_px, box_px)
        if out is None:
            out = np.empty(shape, dtype=np.float32)
        elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError(f"out must be C-contiguous float32 {shape}; got {out.dtype} "
                             f"{out.shape}")
        breaks = np.flatnonzero(paths[1:] != paths[:-1]) + 1
        for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, len(paths)], strict=True):
            stack, info, handle = self._open(str(paths[lo]))
            run = indices[lo:hi]
            contiguous = bool(np.all(np.diff(run) == 1)) if len(run) > 1 else True
            if contiguous and info.dtype == np.dtype("<f4"):
                handle.seek(info.data_offset + int(run[0]) * box_px * box_px * 4)
                if handle.readinto(memoryview(out[lo:hi]).cast("B")) != out[lo:hi].nbytes:
                    raise InputError(f"{info.path}: could not read images {run[0] + 1}–"
                                     f"{run[-1] + 1}; the file is shorter than its header says")
            else:
                out[lo:hi] = stack[run]
        return out

    def close(self) -> None:
        for _, _, handle in self._maps.values():
            handle.close()
        self._maps.clear()

    def __del__(self) -> None:
        self.close()


def header_implied_size(path: str | Path) -> int | None:
    """Bytes an MRC file must hold according to its header (header, extended header, data).

    ``None`` when the file has no complete, plausible MRC header (under 1024 bytes, no
    ``MAP `` stamp, an unknown mode or an empty size): it cannot tell how long the file must
    be. A streaming import uses this to wait for files that are still being written.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.open(path, header_only=True, permissive=True) as mrc:
                header = mrc.header
                if header is None or bytes(header.map) != b"MAP ":
                    return None
                nx, ny, nz = int(header.nx), int(header.ny), int(header.nz)
                mode, ext_bytes = int(header.mode), int(header.nsymbt)
    except (ValueError, OSError):
        return None
    if mode not in _MODE_DTYPES or min(nx, ny, nz) < 1 or ext_bytes < 0:
        return None
    return HEADER_BYTES + ext_bytes + nx * ny * nz * np.dtype(_MODE_DTYPES[mode]).itemsize
