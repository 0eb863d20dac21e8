"""Viewers: pictures and tables of results, rendered to files (PNG, HTML)."""

from cryoweave.viewers._images import (
    central_slices,
    contact_sheet,
    montage,
    power_spectrum,
    show_spectrum,
    stretch,
    thumbnail,
)
from cryoweave.viewers._plots import plot_fsc, plot_series
from cryoweave.viewers._sets import view_set

__all__ = [
    "central_slices",
    "contact_sheet",
    "montage",
    "plot_fsc",
    "plot_series",
    "power_spectrum",
    "show_spectrum",
    "stretch",
    "thumbnail",
    "view_set",
]
