"""Downsample: RELION-exact Fourier cropping of particle stacks with a project cache."""

from cryoweave.protocols.downsample._cache import DownsampleCache, cache_key
from cryoweave.protocols.downsample._files import DownsampleResult, downsample_file
from cryoweave.protocols.downsample._rewrite import stack_name
from cryoweave.protocols.downsample._stack import downsample_stack
from cryoweave.protocols.downsample.protocol import Downsample

__all__ = ["Downsample", "DownsampleCache", "DownsampleResult", "cache_key", "downsample_file",
           "downsample_stack", "stack_name"]
