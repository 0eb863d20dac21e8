"""The project cache of downsampled stacks: ``Cache/downsample/<key>/``.

The key hashes what determines the stack's content — the ordered image list (resolved stack
paths and indices), the identity (path, size, mtime) of every referenced stack, the target box,
``datadir``, ``strip_prefix`` and the code version. Metadata such as CTF or poses is not part of
the key: it does not change the pixels, and the STAR that describes an entry is written anew
for every request. An entry is complete when its manifest (written last) exists; partial or
stale entries are rebuilt; concurrent builders of one key serialise on a lock file and publish
by renaming a private build folder, so neither can corrupt the other's result.

A builder holds its key's lock from creating its build folder until it renames or removes it,
and the kernel releases the lock when the process dies (even by SIGKILL). So a build folder
whose key lock can be taken belongs to a builder that is gone: every request sweeps those
(the lock, unlike a recorded pid, cannot be confused by pid reuse), and never touches the
folder of a live builder.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cryoweave import __version__
from cryoweave.formats import ParticleTable

if TYPE_CHECKING:  # loads on first use: light commands do not need it
    pass

CODE_VERSION = f"downsample-1/{__version__}"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class CacheEntry:
    folder: Path
    stack_path: Path
    hit: bool
    manifest: dict


def cache_key(table: ParticleTable, box_px: int, datadir: str | None = None,
              strip_prefix: str | None = None) -> str:
    """The cache key of downsampling ``table``'s images to ``box_px``."""
    import pandas as pd

    parts = table.particles
    digest = hashlib.sha256()
    digest.update(json.dumps({"version": CODE_VERSION, "box_px": box_px, "datadir": datadir,
                              "strip_prefix": strip_prefix}, sort_keys=True).encode())
    codes, uniques = pd.factorize(parts["image_path"], sort=False)
    digest.update(json.dumps(list(map(str, uniques))).encode())
    digest.update(np.ascontiguousarray(codes, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(parts["image_index"], dtype=np.int64).tobytes())
    boxes = dict(zip(table.optics["group_id"].astype(int), table.optics["box_px"].astype(int),
                     strict=True))
    digest.update(np.asarray(parts["optics_group"].astype(int).map(boxes), np.int64).tobytes())
    for path in uniques:
        stat = os.stat(path)
        digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:32]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_build_folders(root: Path, key: str) -> None:
    """Remove ``key``'s build folders; the caller holds the key's lock (so none is live)."""
    for folder in root.glob(f".{key}.*.building"):
        shutil.rmtree(folder, ignore_errors=True)


def _build_key(folder: Path) -> str:
    return folder.name[1:].split(".", 1)[0]  # .<key>.<random>.building


class DownsampleCache:
    """Downsampled stacks shared by every run of a project."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def entry_dir(self, key: str) -> Path:
        return self.root / key

    def lookup(self, key: str, stack_name: str) -> CacheEntry | None:
        folder = self.entry_dir(key)
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
        except (OSError, json.JSONDecodeError):
            return None
        stack = folder / stack_name
        if not stack.is_file() or stack.stat().st_size != manifest.get("stack_bytes"):
            return None
        return CacheEntry(folder, stack, True, manifest)

    def sweep_dead_builders(self) -> list[str]:
        """Remove the build folders of builders that are gone; returns their keys.

        A key whose lock is held (a live builder, in this process or another) is skipped.
        """
        swept = []
        for key in sorted({_build_key(f) for f in self.root.glob(".*.building")}):
            try:
                handle = open(self.root / f".{key}.lock", "a+")  # noqa: SIM115 - closed below
            except OSError:
                continue  # a read-only cache: leave it to its owner
            with handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                try:
                    _remove_build_folders(self.root, key)
                    swept.append(key)
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
        return swept

    def get_or_build(self, key: str, stack_name: str,
                     build: Callable[[Path], dict]) -> CacheEntry:
        """The entry for ``key``; ``build(stack_path)`` writes the stack when it is missing.

        Build folders left by dead builders (of any key) are removed first.
        """
        self.sweep_dead_builders()
        found = self.lookup(key, stack_name)
        if found is not None:
            return found
        self.root.mkdir(parents=True, exist_ok=True)
        with _locked(self.root / f".{key}.lock"):
            found = self.lookup(key, stack_name)  # another builder may have finished
            if found is not None:
                return found
            _remove_build_folders(self.root, key)  # we hold the lock: they are dead
            folder = self.entry_dir(key)
            if folder.exists():
                shutil.rmtree(folder)  # partial or stale: rebuild
            building = self.root / f".{key}.{uuid.uuid4().hex[:8]}.building"
            building.mkdir()
            try:
                started = time.time()
                info = build(building / stack_name)
                manifest = {"key": key, "version": CODE_VERSION, "created": started,
                            "seconds": time.time() - started,
                            "stack_bytes": (building / stack_name).stat().st_size, **info}
                (building / MANIFEST).write_text(json.dumps(manifest, indent=2))
                os.rename(building, folder)
            except BaseException:
                shutil.rmtree(building, ignore_errors=True)
                raise
        return CacheEntry(folder, folder / stack_name, False, manifest)
