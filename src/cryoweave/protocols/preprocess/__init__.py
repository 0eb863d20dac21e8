"""PreprocessMicrographs: Xmipp's micrograph preprocessing, streaming."""

from cryoweave.protocols.preprocess.protocol import PreprocessMicrographs

__all__ = ["PreprocessMicrographs"]
