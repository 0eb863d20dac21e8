"""Downsample: RELION-exact Fourier cropping of particle stacks with a project cache.

The names below load on first use (PEP 562), so that `cryoweave form Downsample` imports
neither numpy, pandas nor the engine.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Downsample": "protocol",
    "DownsampleCache": "_cache",
    "DownsampleResult": "_files",
    "cache_key": "_cache",
    "downsample_file": "_files",
    "downsample_stack": "_stack",
    "stack_name": "_rewrite",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
