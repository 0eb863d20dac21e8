"""``cryoweave view RUN.OUTPUT``: pictures of a set's items, written to files with an index.

Files are named after the run's label (or ``run<id>`` without one) and the output, e.g.
``rec_volume_slices.png``; ``index.html`` lists every picture with a caption saying what it is.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np

from cryoweave.formats import read_image, read_images, read_volume
from cryoweave.store import MicrographSet, ParticleSet, RecordSet, SetHandle, VolumeSet
from cryoweave.viewers._images import (
    contact_sheet,
    gallery_figure,
    power_spectrum,
    save_figure,
    save_png,
    show_spectrum,
    spectrum_figure,
    thumbnail,
)
from cryoweave.viewers._plots import plot_angular_distribution
from cryoweave.viewers._volumes import plot_volume

Picture = tuple[Path, str]  # (file, caption)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def set_title(handle: SetHandle) -> tuple[str, str]:
    """(display name ``label.output``, file-name prefix ``label_output``) of a set."""
    run = handle.project.get_run(handle.run_id) if handle.run_id is not None else None
    owner = (run.label or f"run{run.id}") if run is not None else f"set{handle.id}"
    return f"{owner}.{handle.name}", f"{_safe(owner)}_{_safe(handle.name)}"


def view_micrographs(micrographs: MicrographSet, folder: Path, limit: int = 24) -> list[Picture]:
    display, prefix = set_title(micrographs)
    frame = micrographs.query().frame().head(limit)
    default_pixel = micrographs.properties.get("pixel_size_a")
    written: list[Picture] = []
    thumbs, spectra, labels = [], [], []
    pixels = []
    for _, item in frame.iterrows():
        image, header_pixel = read_image(item["path"])
        pixel = float(item.get("pixel_size_a") or default_pixel or header_pixel or 1.0)
        name = str(item.get("name") or Path(item["path"]).stem)
        stem = f"{prefix}_{_safe(Path(name).stem)}"
        thumbs.append(thumbnail(image, 256))
        spectra.append(show_spectrum(power_spectrum(image, 256)))
        pixels.append(pixel)
        labels.append(f"#{int(item['item_id'])} {name}")
        written.append((save_png(folder / f"{stem}_thumb.png", thumbnail(image)),
                        f"{display}: micrograph #{int(item['item_id'])} {name}, "
                        "contrast-stretched thumbnail"))
        spectrum = show_spectrum(power_spectrum(image))
        written.append((save_figure(spectrum_figure(
            spectrum, pixel, title=f"{display} #{int(item['item_id'])} {name}: power spectrum"),
            folder / f"{stem}_psd.png", dpi=100),
            f"{display}: power spectrum of micrograph #{int(item['item_id'])} {name} "
            f"({spectrum.shape[0]}-px tiles at {pixel:.3g} Å/px), rings labelled in Å"))
    if thumbs:
        written.append((contact_sheet(thumbs, labels, folder / f"{prefix}_contact_sheet.png",
                                      title=f"{display}: {len(frame)} micrographs"),
                        f"{display}: contact sheet of the first {len(frame)} micrographs"))
        written.append((contact_sheet(spectra, labels, folder / f"{prefix}_power_spectra.png",
                                      title=f"{display}: power spectra",
                                      rings_pixel_size_a=pixels[0]),
                        f"{display}: power spectra of the first {len(frame)} micrographs "
                        "(256-px tiles), rings labelled in Å"))
    return written


def view_particles(particles: ParticleSet, folder: Path, limit: int = 100) -> list[Picture]:
    display, prefix = set_title(particles)
    frame = particles.query().frame(with_extra=False).head(limit)
    images, ids = [], []
    for path, rows in frame.groupby("image_path", sort=False):
        images.append(read_images(path, rows["image_index"].to_numpy()))
        ids.extend(rows["item_id"].tolist())
    if not images:
        return []
    stack = np.concatenate(images)[:limit]
    title = f"{display}: particles {ids[0]}–{ids[len(stack) - 1]} of {particles.count()}"
    path = save_figure(gallery_figure(stack, ids[:len(stack)], title=title),
                       folder / f"{prefix}_gallery.png", dpi=100)
    return [(path, f"{display}: the first {len(stack)} particles, each numbered by its "
                   "particle id (item_id)"), *view_angles(particles, folder)]


def view_angles(particles: ParticleSet, folder: Path) -> list[Picture]:
    """The angular distribution (rot, tilt) of a set's particles with poses; nothing for
    particles without them."""
    if not particles.properties.get("has_poses"):
        return []
    display, prefix = set_title(particles)
    angles = particles.query().frame(with_extra=False, columns=["rot_deg", "tilt_deg"])
    angles = angles.dropna()
    if not len(angles):
        return []
    title = f"{display}: angular distribution of {len(angles)} particles"
    path = plot_angular_distribution(angles["rot_deg"].to_numpy(float),
                                     angles["tilt_deg"].to_numpy(float),
                                     folder / f"{prefix}_angular_distribution.png", title=title)
    return [(path, f"{title} (rot across, tilt down, 5° bins, log colour scale)")]


def view_volumes(volumes: VolumeSet, folder: Path) -> list[Picture]:
    display, prefix = set_title(volumes)
    frame = volumes.to_frame()
    written: list[Picture] = []
    for _, item in frame.iterrows():
        item_part = f"_{int(item['item_id'])}" if len(frame) > 1 else ""
        for column, what in (("path", "map"), ("half1_path", "half map 1"),
                             ("half2_path", "half map 2")):
            if not isinstance(item.get(column), str):
                continue
            volume, header_pixel = read_volume(item[column])
            pixel = float(item.get("pixel_size_a") or header_pixel or 1.0)
            part = "" if column == "path" else "_" + column.removesuffix("_path")
            for mode, words in (("slices", "central sections"),
                                ("projections", "projections (sums along z, y, x)")):
                path = folder / f"{prefix}{item_part}{part}_{mode}.png"
                plot_volume(volume, pixel, path, title=f"{display} {what}", mode=mode)
                written.append((path, f"{display}: {what}, {words} in the XY, XZ and YZ "
                                      f"planes ({volume.shape[0]} px at {pixel:.3g} Å/px)"))
    return written


def view_set(handle: SetHandle, folder: str | Path) -> list[Path]:
    """Write pictures of ``handle``'s items into ``folder`` plus an ``index.html``."""
    folder = Path(folder)
    if isinstance(handle, MicrographSet):
        pictures = view_micrographs(handle, folder)
    elif isinstance(handle, ParticleSet):
        pictures = view_particles(handle, folder)
    elif isinstance(handle, VolumeSet):
        pictures = view_volumes(handle, folder)
    elif isinstance(handle, RecordSet):
        from cryoweave.viewers._fsc import view_fsc

        display, prefix = set_title(handle)
        pictures = view_fsc(handle, folder, prefix=prefix, display=display)
    else:
        pictures = []
    written = [path for path, _ in pictures]
    if pictures:
        display, _ = set_title(handle)
        items = "\n".join(f'<figure><img src="{html.escape(p.name)}" style="max-width:100%">'
                          f"<figcaption>{html.escape(caption)}</figcaption></figure>"
                          for p, caption in pictures)
        index = folder / "index.html"
        index.write_text(f"<!doctype html><meta charset=\"utf-8\">"
                         f"<title>{html.escape(display)}</title>"
                         f"<h1>{html.escape(display)} ({handle.kind} set, {handle.count()} "
                         f"items)</h1>\n{items}\n")
        written.append(index)
    return written
