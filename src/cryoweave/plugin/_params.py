"""Parameter declarations: a frozen pydantic model whose JSON Schema carries the form metadata.

Form metadata (section, expert level, unit, declarative visibility) goes into each field's
``json_schema_extra``, so ``cryoweave form NAME`` prints a schema a GUI renders without Python.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# Expert levels, as Scipion's forms have them.
NORMAL = 0
ADVANCED = 1
EXPERT = 2


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
    name makes a poor one; without it the form derives one from the name and unit.
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
