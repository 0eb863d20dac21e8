"""``cryoweave view RUN.OUTPUT``: pictures of a set's items, written to files with an index."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from cryoweave.formats import read_image, read_images, read_volume
from cryoweave.viewers._images import (
    central_slices,
    contact_sheet,
    montage,
    power_spectrum,
    save_png,
    show_spectrum,
    thumbnail,
)
from cryoweave.workflow import MicrographSet, ParticleSet, RecordSet, SetHandle, VolumeSet


def view_micrographs(micrographs: MicrographSet, folder: Path, limit: int = 24) -> list[Path]:
    frame = micrographs.query().frame().head(limit)
    written, thumbs, spectra, labels = [], [], [], []
    for _, item in frame.iterrows():
        image, _ = read_image(item["path"])
        name = f"{int(item['item_id']):06d}"
        thumbs.append(thumbnail(image, 256))
        spectra.append(show_spectrum(power_spectrum(image, 256)))
        labels.append(str(item.get("name") or name))
        written.append(save_png(folder / f"{name}_thumb.png", thumbnail(image)))
        written.append(save_png(folder / f"{name}_psd.png", show_spectrum(power_spectrum(image))))
    if thumbs:
        written.append(contact_sheet(thumbs, labels, folder / "contact_sheet.png",
                                     title=f"set {micrographs.id}: {len(frame)} micrographs"))
        written.append(contact_sheet(spectra, labels, folder / "power_spectra.png",
                                     title="power spectra"))
    return written


def view_particles(particles: ParticleSet, folder: Path, limit: int = 100) -> list[Path]:
    frame = particles.query().frame(with_extra=False).head(limit)
    images = [read_images(path, rows["image_index"].to_numpy())
              for path, rows in frame.groupby("image_path", sort=False)]
    if not images:
        return []
    return [save_png(folder / "gallery.png", montage(np.concatenate(images)[:limit]))]


def view_volumes(volumes: VolumeSet, folder: Path) -> list[Path]:
    written = []
    for _, item in volumes.to_frame().iterrows():
        for column in ("path", "half1_path", "half2_path"):
            if isinstance(item.get(column), str):
                volume, _ = read_volume(item[column])
                name = f"{int(item['item_id']):06d}_{column.removesuffix('_path')}_slices.png"
                written.append(save_png(folder / name, central_slices(volume)))
    return written


def view_set(handle: SetHandle, folder: str | Path) -> list[Path]:
    """Write pictures of ``handle``'s items into ``folder`` plus an ``index.html``."""
    folder = Path(folder)
    if isinstance(handle, MicrographSet):
        written = view_micrographs(handle, folder)
    elif isinstance(handle, ParticleSet):
        written = view_particles(handle, folder)
    elif isinstance(handle, VolumeSet):
        written = view_volumes(handle, folder)
    elif isinstance(handle, RecordSet):
        from cryoweave.viewers._fsc import view_fsc

        written = view_fsc(handle, folder)
    else:
        written = []
    if written:
        items = "\n".join(f'<figure><img src="{html.escape(p.name)}" style="max-width:100%">'
                          f"<figcaption>{html.escape(p.name)}</figcaption></figure>"
                          for p in written)
        index = folder / "index.html"
        index.write_text(f"<!doctype html><title>set {handle.id}</title>"
                         f"<h1>{handle.kind} set {handle.id}</h1>\n{items}\n")
        written.append(index)
    return written
