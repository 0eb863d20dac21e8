"""Shared pieces of the built-in protocols' ``summary()``: counts, pixel size, box, resolution.

Keys (stable, shared with ``--json`` and the GUI): ``particles``/``micrographs``/``volumes``
(items in the output), ``failed`` (items that failed), ``pixel_size_a``, ``box_px``,
``resolution_0143_a`` and ``resolution_05_a`` (half-map FSC at 0.143 and 0.5, interpolated,
Å), ``particles_used``, ``symmetry``, ``iterations``.
"""

from __future__ import annotations

from typing import Any

from cryoweave.plugin import SummaryContext


def _number(value: Any) -> Any:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if number != number:  # NaN
        return None
    return int(number) if number.is_integer() and abs(number) < 1e12 else number


def set_summary(handle: Any, count_key: str) -> dict[str, Any]:
    """Item count, pixel size and box of an output set (from its optics or properties)."""
    if handle is None:
        return {}
    summary: dict[str, Any] = {count_key: handle.count()}
    props = handle.properties
    pixel, box = props.get("pixel_size_a"), props.get("box_px")
    if hasattr(handle, "optics") and (pixel is None or box is None):
        optics = handle.optics()
        if len(optics):
            pixel = pixel if pixel is not None else optics["pixel_size_a"].iloc[0]
            box = box if box is not None else optics["box_px"].iloc[0]
    if _number(pixel) is not None:
        summary["pixel_size_a"] = float(pixel)
    if _number(box) is not None:
        summary["box_px"] = int(box)
    return summary


def records(handle: Any) -> list[dict[str, Any]]:
    """The ``data`` of a record set's items, in item order."""
    if handle is None:
        return []
    frame = handle.to_frame()
    if not len(frame):
        return []
    return [dict(d) for d in frame.sort_values("item_id")["data"] if isinstance(d, dict)]


def fsc_summary(record: dict[str, Any]) -> dict[str, Any]:
    """Resolution at FSC 0.143 and 0.5 (interpolated, Å) of one FSC record."""
    resolutions = record.get("resolutions_a") or {}
    summary = {}
    for key, name in (("resolution_0143_a", "fsc0143_interpolated"),
                      ("resolution_05_a", "fsc05_interpolated")):
        value = _number(resolutions.get(name))
        if value is not None:
            summary[key] = round(float(value), 3)
    return summary


def reconstruction_summary(ctx: SummaryContext) -> dict[str, Any]:
    """Resolution, particles used, pixel size, box and symmetry of a map with an FSC output."""
    fsc = records(ctx.output("fsc"))
    summary: dict[str, Any] = {}
    if fsc:
        last = fsc[-1]
        summary.update(fsc_summary(last))
        used = last.get("particles_used", last.get("particles"))
        if _number(used) is not None:
            summary["particles_used"] = int(used)
        if "iteration" in last:
            summary["iterations"] = len(fsc)
    volume = ctx.output("volume")
    if volume is not None:
        props = volume.properties
        for key in ("pixel_size_a", "box_px", "symmetry"):
            if props.get(key) is not None:
                summary[key] = props[key]
    if "symmetry" not in summary and ctx.params.get("symmetry"):
        summary["symmetry"] = ctx.params["symmetry"]
    return summary
