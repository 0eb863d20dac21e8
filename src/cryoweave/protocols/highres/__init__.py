"""ReconstructHighRes: Xmipp-style iterative 3D refinement."""

from cryoweave.protocols.highres.protocol import ReconstructHighRes

__all__ = ["ReconstructHighRes"]
