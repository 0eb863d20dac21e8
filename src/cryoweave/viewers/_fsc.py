"""``cryoweave view RUN.fsc``: the FSC curve(s) of a record set, with the 0.143 and 0.5 marks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cryoweave.viewers._plots import plot_fsc, plot_resolution_per_iteration


def view_fsc(records: object, folder: Path, *, prefix: str = "fsc",
             display: str = "") -> list[tuple[Path, str]]:
    """(``<prefix>.png``, caption) of the set's FSC records (one line per record, e.g.
    per iteration; the last one's resolution in the title); nothing when the set holds no
    FSC curve."""
    frame = records.to_frame()  # type: ignore[attr-defined]
    if not len(frame):
        return []
    curves = [d for d in frame.sort_values("item_id")["data"]
              if isinstance(d, dict) and "frequency_per_a" in d and "fsc" in d]
    if not curves:
        return []
    lines = {}
    for number, record in enumerate(curves, 1):
        name = f"iteration {record['iteration']}" if "iteration" in record else \
            ("half maps" if len(curves) == 1 else f"curve {number}")
        lines[name] = (np.asarray(record["frequency_per_a"]), np.asarray(record["fsc"]))
    resolutions = curves[-1].get("resolutions_a") or {}
    title = f"{display}: half-map FSC" if display else "half-map FSC"
    if "fsc0143_interpolated" in resolutions and "fsc05_interpolated" in resolutions:
        title += (f": {resolutions['fsc0143_interpolated']:.2f} Å at 0.143, "
                  f"{resolutions['fsc05_interpolated']:.2f} Å at 0.5")
    caption = (f"{title} against spatial frequency"
               f"{', one curve per iteration' if len(curves) > 1 else ''}; dashed lines at "
               "FSC 0.143 and 0.5")
    pictures = [(plot_fsc(lines, folder / f"{prefix}.png", title=title), caption)]
    return pictures + view_resolution_per_iteration(curves, folder, prefix=prefix,
                                                    display=display)


def view_resolution_per_iteration(records: list[dict], folder: Path, *, prefix: str,
                                  display: str) -> list[tuple[Path, str]]:
    """(``<prefix>_resolution_per_iteration.png``, caption) for a refinement's iteration
    records; nothing without them (e.g. a single reconstruction's FSC)."""
    iterations = [r for r in records if "iteration" in r and "resolution_a" in r]
    if not iterations:
        return []
    last = max(iterations, key=lambda r: r["iteration"])
    title = (f"{display + ': ' if display else ''}resolution per iteration "
             f"({last['resolution_a']:.2f} Å after iteration {last['iteration']})")
    path = plot_resolution_per_iteration(
        iterations, folder / f"{prefix}_resolution_per_iteration.png", title=title)
    return [(path, f"{title}: half-map FSC resolution in Å of each iteration's map at its "
                   "criterion (and at 0.143); lower is better")] if path else []
