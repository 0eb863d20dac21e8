"""Parameter declarations: a frozen pydantic model whose JSON Schema carries the form metadata.

Form metadata (section, expert level, unit, declarative visibility) goes into each field's
``json_schema_extra``, so ``cryoweave form NAME`` prints a schema a GUI renders without Python.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo

# Expert levels, as Scipion's forms have them.
NORMAL = 0
ADVANCED = 1
EXPERT = 2


# Unit suffixes the form shows beside the input instead of in the title ("box_px" -> "Box").
_UNIT_SUFFIX = re.compile(r"_(px|a|a2|s|kv|mm|deg|pct|percent|um)$")
_ACRONYMS = {"ctf": "CTF", "cc": "CC", "snr": "SNR", "ssnr": "SSNR", "fsc": "FSC",
             "star": "STAR", "mrc": "MRC", "cs": "Cs", "gpu": "GPU", "cpu": "CPU"}


def field_title(name: str, info: FieldInfo | None = None) -> str:
    """The human title of a parameter: its declared ``title``, else one derived from the name
    without its ``do_`` prefix and, when it declares a unit, its unit suffix, acronyms in capitals
    (``box_px`` -> "Box", ``do_lowpass`` -> "Lowpass", ``weight_ssnr`` -> "Weight SSNR").
    One place for CLI ``form``, the web form and the reference pages."""
    if info is not None and info.title:
        return info.title
    extra = info.json_schema_extra if info is not None else None
    has_unit = isinstance(extra, dict) and bool(extra.get("unit"))
    words = _UNIT_SUFFIX.sub("", name) if has_unit else name
    words = words.removeprefix("do_").replace("_", " ").strip() or name
    titled = [_ACRONYMS.get(word.lower(), word) for word in words.split(" ")]
    titled[0] = titled[0][:1].upper() + titled[0][1:]
    return " ".join(titled)


def _schema_title(name: str, info: FieldInfo) -> str:
    return field_title(name, info)


class ProtocolParams(BaseModel):
    """Base of every protocol's ``Params``: frozen, unknown keys rejected, enums by value,
    floats finite (physical ranges: :mod:`cryoweave.physical`)."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        use_enum_values=True,
        validate_default=True,
        str_strip_whitespace=True,
        allow_inf_nan=False,  # Infinity/NaN from JSON: no physical value is infinite
        field_title_generator=_schema_title,
    )


def param(
    default: Any = ...,
    *,
    description: str,
    section: str | None = None,
    expert: bool | int = False,
    visible_if: dict[str, Any] | None = None,
    unit: str | None = None,
    path: bool = False,
    title: str | None = None,
    **constraints: Any,
) -> Any:
    """Declare a protocol parameter.

    ``expert`` is ``False``/``True`` or a level (0 normal, 1 advanced, 2 expert).
    ``visible_if`` is a declarative condition, e.g. ``{"do_lowpass": True}`` — every key must
    equal its value (a list means "one of"). ``unit`` is shown next to the input ("Å", "px").
    ``path=True`` marks a file, folder or glob pattern (schema ``"format": "path"``): a
    relative value is taken from the params (or workflow) file's folder and stored absolute.
    ``title`` is the human name forms show ("Spherical aberration (Cs)"), for parameters whose
    name makes a poor one; without it :func:`field_title` derives one from the name.
    Remaining keyword arguments are pydantic constraints (``gt``, ``le``, ...).
    """
    extra: dict[str, Any] = {}
    if section:
        extra["section"] = section
    level = int(expert) if isinstance(expert, bool) else expert
    if level:
        extra["expert"] = level
    if visible_if:
        extra["visible_if"] = dict(visible_if)
    if unit:
        extra["unit"] = unit
    if path:
        extra["format"] = "path"
    if title is not None:
        constraints["title"] = title
    return Field(default, description=description, json_schema_extra=extra or None, **constraints)


def field_meta(model: type[BaseModel], name: str) -> dict[str, Any]:
    """The form metadata (section, expert, visible_if, unit) of one declared field."""
    info = model.model_fields[name]
    extra = info.json_schema_extra
    return dict(extra) if isinstance(extra, dict) else {}
