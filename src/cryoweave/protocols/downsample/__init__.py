"""Downsample: RELION-exact Fourier cropping of particle stacks with a project cache.

``Downsample`` (the protocol, which needs the authoring API and the workflow runtime) is
imported on first use; the stand-alone path (``downsample_file``) does not load it.
"""

from __future__ import annotations

from typing import Any

from cryoweave.protocols.downsample._cache import DownsampleCache, cache_key
from cryoweave.protocols.downsample._files import DownsampleResult, downsample_file
from cryoweave.protocols.downsample._rewrite import stack_name
from cryoweave.protocols.downsample._stack import downsample_stack


def __getattr__(name: str) -> Any:
    if name == "Downsample":
        from cryoweave.protocols.downsample.protocol import Downsample

        return Downsample
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Downsample", "DownsampleCache", "DownsampleResult", "cache_key", "downsample_file",
           "downsample_stack", "stack_name"]
