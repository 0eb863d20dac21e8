"""Paths: ``index@path`` image names, relative stack paths, and files matching a pattern."""

from __future__ import annotations

import errno
import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cryoweave.errors import InputError

if TYPE_CHECKING:  # loads on first use: light commands do not need it
    import pandas as pd


def split_image_names(names: pd.Series, source: Path | str) -> tuple[np.ndarray, pd.Series, int]:
    """Split ``index@path`` names into 0-based indices, paths, and the index zero-padding.

    A name without ``@`` is a single-image file (index 0). Returns the padding width if every
    index string has the same length and at least one starts with ``0``, else 0.
    """
    import pandas as pd

    text = names.astype(str)
    if not len(text):
        return np.zeros(0, np.int64), pd.Series([], dtype=object), 0
    missing = names.isna().to_numpy() | text.str.lower().isin(["nan", ""]).to_numpy()
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise InputError(f"{source}: row {row + 1}, column rlnImageName: no image name "
                         f"({text.iloc[row]!r}); expected 'index@path'")
    has_at = text.str.contains("@", regex=False)
    parts = text.str.split("@", n=1, expand=True)
    if parts.shape[1] == 1:
        parts[1] = None
    index_text = parts[0].where(has_at, "1")
    paths = parts[1].where(has_at, text).astype(str)
    numbers = pd.to_numeric(index_text, errors="coerce")
    bad = numbers.isna() | (numbers != np.round(numbers)) | (numbers < 1)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(f"{source}: row {row + 1}, column rlnImageName: {text.iloc[row]!r} is "
                         "not 'index@path' with an integer index ≥ 1 (the first image is 1)")
    index = numbers.astype(np.int64).to_numpy()
    lengths = index_text[has_at].str.len()
    width = 0
    if len(lengths) and lengths.nunique() == 1 and index_text[has_at].str.startswith("0").any():
        width = int(lengths.iloc[0])
    return index - 1, paths, width


def format_image_names(indices: np.ndarray, paths: pd.Series | list[str], width: int = 6
                       ) -> list[str]:
    """``index@path`` names from 0-based indices (RELION writes ``%06d``)."""
    fmt = f"{{:0{width}d}}@{{}}" if width else "{}@{}"
    return [fmt.format(int(i) + 1, p) for i, p in zip(indices, paths, strict=True)]


class PathResolver:
    """Resolve stack paths written in a metadata file to absolute paths.

    With ``datadir``: ``datadir/path`` (then ``datadir/basename``). Without: the metadata
    file's folder and up to three parents (RELION writes paths relative to its project
    folder, which is above ``Refine3D/job010/``). ``strip_prefix`` is removed first.
    Unresolvable paths are returned relative to the first candidate base, so the caller can
    report them as missing.
    """

    def __init__(self, source_dir: Path, datadir: str | Path | None = None,
                 strip_prefix: str | None = None):
        self.source_dir = Path(source_dir).resolve()
        self.datadir = Path(datadir).resolve() if datadir else None
        self.strip_prefix = strip_prefix or ""
        if self.datadir is not None:
            self.bases = [self.datadir]
        else:
            self.bases = [self.source_dir, *list(self.source_dir.parents)[:3]]
        self._cache: dict[str, str] = {}

    def _candidates(self, rel: str) -> list[Path]:
        found = [base / rel for base in self.bases]
        if self.datadir is not None:
            found.append(self.datadir / os.path.basename(rel))
        return found

    def resolve(self, raw: str) -> str:
        if raw in self._cache:
            return self._cache[raw]
        rel = raw
        if self.strip_prefix and rel.startswith(self.strip_prefix):
            rel = rel[len(self.strip_prefix):].lstrip("/")
        if os.path.isabs(rel):
            result = os.path.normpath(rel)
        else:
            candidates = self._candidates(rel)
            hit = next((c for c in candidates if c.exists()), None)
            if hit is not None and hit.parent != candidates[0].parent:
                # prefer the base that worked for the next paths too
                base = next((b for b in self.bases if (b / rel) == hit), None)
                if base is not None:
                    self.bases.remove(base)
                    self.bases.insert(0, base)
            result = os.path.normpath(hit if hit is not None else candidates[0])
        self._cache[raw] = result
        return result

    def resolve_series(self, paths: pd.Series) -> pd.Series:
        import pandas as pd

        unique = {p: self.resolve(p) for p in pd.unique(paths)}
        return paths.map(unique)


def relative_to(path: str, folder: Path) -> str:
    """``path`` written relative to ``folder`` (as in a STAR file written into ``folder``)."""
    return os.path.relpath(path, folder)


def missing_files(paths: pd.Series) -> list[str]:
    import pandas as pd

    return sorted(p for p in pd.unique(paths) if not os.path.exists(p))


@dataclass(frozen=True)
class MatchedFile:
    """A file a glob pattern matched: its real path, or why it cannot be imported.

    ``path`` is the name the pattern matched (absolute); ``real`` the file it is, with every
    symbolic link resolved (``None`` when ``problem`` says why there is no usable file).
    """

    path: str
    real: str | None
    problem: str | None = None
    missing: bool = False  # the file or a link's target does not exist (yet)

    @property
    def key(self) -> str:
        """One key per real file (two names of one file share it)."""
        return self.real if self.real is not None else self.path


def pattern_folder(pattern: str) -> Path:
    """The folder a glob pattern looks in: its leading path components without wildcards."""
    parts = Path(os.path.abspath(pattern)).parts
    static = []
    for part in parts:
        if glob.has_magic(part):
            break
        static.append(part)
    if len(static) == len(parts):  # no wildcard: a single file
        static = static[:-1]
    return Path(*static)


def match_files(pattern: str, *, follow_external_links: bool = False,
                parameter: str = "follow_external_links") -> list[MatchedFile]:
    """Files matching ``pattern`` in sorted order, one per real file.

    Symbolic links are resolved and two names of one file give one entry (the first name in
    sorted order). A link loop or a link whose target is missing gives an entry with a
    ``problem``; so does a link that leads out of the pattern's folder (see
    :func:`pattern_folder`) unless ``follow_external_links`` (``parameter`` is its name in
    that message). Hidden files (``.name``) never match ``*``.
    """
    folder = os.path.realpath(pattern_folder(pattern))
    found: dict[str, MatchedFile] = {}
    for name in sorted(glob.glob(pattern)):
        path = os.path.abspath(name)
        matched = _match_one(path, folder, follow_external_links, parameter)
        found.setdefault(matched.key, matched)
    return list(found.values())


def _match_one(path: str, folder: str, follow_external_links: bool,
               parameter: str) -> MatchedFile:
    try:
        real = os.path.realpath(path, strict=True)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return MatchedFile(path, None, f"{path}: symbolic link loop (following the link "
                                           "leads back to itself); fix or remove the link")
        if os.path.islink(path):
            return MatchedFile(path, None, f"{path}: broken symbolic link: its target "
                                           f"{os.path.realpath(path)} does not exist; fix or "
                                           "remove the link", missing=True)
        return MatchedFile(path, None, f"{path}: cannot be read ({exc.strerror})",
                           missing=exc.errno == errno.ENOENT)
    if not follow_external_links and os.path.commonpath([real, folder]) != folder:
        return MatchedFile(path, None, f"{path}: symbolic link to {real}, outside the watched "
                                       f"folder {folder}; links that leave the folder are not "
                                       f"followed; set {parameter} to true to import it, or "
                                       "copy the file into the folder")
    return MatchedFile(path, real)
