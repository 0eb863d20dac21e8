"""A file browser confined to allowed roots (the project folder and the data roots).

A path is refused when it has a ``..`` component, when it is absolute and outside every root,
or when it resolves (symlinks followed) outside every root. Listings leave out entries whose
target leaves the roots. Nothing is executed; paths only reach ``os`` calls.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cryoweave.errors import InputError


class PathRefused(InputError):
    """A path outside the allowed roots (or with ``..``)."""


class FileBrowser:
    def __init__(self, roots: list[Path]):
        seen: list[Path] = []
        for root in roots:
            real = Path(os.path.realpath(root))
            if real not in seen:
                seen.append(real)
        if not seen:
            raise InputError("the file browser needs at least one root folder")
        self.roots = seen

    def _inside(self, real: Path) -> bool:
        return any(real == root or root in real.parents for root in self.roots)

    def resolve(self, path: str | None) -> Path:
        """The real path of ``path`` (relative paths are taken from the first root)."""
        if path is None or path == "":
            return self.roots[0]
        if "\x00" in path:
            raise PathRefused("a path cannot contain NUL characters")
        given = Path(path)
        if ".." in given.parts:
            raise PathRefused(f"{path!r}: '..' is not allowed in paths")
        candidate = given if given.is_absolute() else self.roots[0] / given
        real = Path(os.path.realpath(candidate))
        if not self._inside(real):
            raise PathRefused(f"{path!r} is outside the allowed folders "
                              f"({', '.join(map(str, self.roots))})")
        return real

    def check_param_path(self, value: str) -> None:
        """Refuse a file path or glob pattern given as a parameter unless the folder it names
        (the part before any wildcard) is inside the roots."""
        parts = Path(value).parts
        fixed = []
        for part in parts:
            if any(ch in part for ch in "*?["):
                break
            fixed.append(part)
        self.resolve(str(Path(*fixed)) if fixed else "")

    def listing(self, path: str | None, limit: int = 2000) -> dict[str, Any]:
        folder = self.resolve(path)
        if not folder.is_dir():
            raise InputError(f"{path!r} is not a folder")
        entries = []
        with os.scandir(folder) as it:
            for entry in sorted(it, key=lambda e: e.name):
                if len(entries) >= limit:
                    break
                real = Path(os.path.realpath(entry.path))
                if not self._inside(real):
                    continue  # a symlink out of the roots
                try:
                    is_dir = entry.is_dir()
                    size = None if is_dir else entry.stat().st_size
                except OSError:
                    continue
                entries.append({"name": entry.name, "path": str(folder / entry.name),
                                "dir": is_dir, "size": size})
        parent = folder.parent if folder not in self.roots and self._inside(folder.parent) \
            else None
        return {"path": str(folder), "parent": str(parent) if parent else None,
                "roots": [str(r) for r in self.roots], "entries": entries}
