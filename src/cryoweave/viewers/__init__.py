"""Viewers: pictures and tables of results, rendered to files (PNG, HTML)."""

from cryoweave.viewers._images import (
    central_slices,
    contact_sheet,
    contact_sheet_figure,
    gallery_figure,
    montage,
    power_spectrum,
    resolution_rings,
    save_figure,
    show_spectrum,
    spectrum_figure,
    stretch,
    thumbnail,
)
from cryoweave.viewers._plots import (
    plot_angular_distribution,
    plot_fsc,
    plot_resolution_per_iteration,
    plot_series,
)
from cryoweave.viewers._sets import view_set
from cryoweave.viewers._thumbs import item_thumbnail
from cryoweave.viewers._volumes import plot_volume, volume_figure

__all__ = [
    "central_slices",
    "contact_sheet",
    "contact_sheet_figure",
    "gallery_figure",
    "item_thumbnail",
    "montage",
    "plot_angular_distribution",
    "plot_fsc",
    "plot_resolution_per_iteration",
    "plot_series",
    "plot_volume",
    "power_spectrum",
    "resolution_rings",
    "save_figure",
    "show_spectrum",
    "spectrum_figure",
    "stretch",
    "thumbnail",
    "view_set",
    "volume_figure",
]
