"""Parameter declarations several protocols share (same name, same form help everywhere)."""

from __future__ import annotations

from typing import Any

from cryoweave.plugin import param


def datadir_param() -> Any:
    """``datadir``: the base folder of relative image paths in a STAR/.cs file."""
    return param(None, section="Input", expert=True, path=True,
                 description="Base folder of relative image paths in the STAR/.cs file")


def strip_prefix_param() -> Any:
    """``strip_prefix``: a prefix removed from image paths before they are resolved."""
    return param(None, section="Input", expert=True,
                 description="Prefix removed from image paths before resolving them")
