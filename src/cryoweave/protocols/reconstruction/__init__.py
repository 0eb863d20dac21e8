"""Reconstruction protocols: simulation with known truth and reconstruction from known poses."""

from cryoweave.protocols.reconstruction.reconstruct_fourier import ReconstructFourier
from cryoweave.protocols.reconstruction.simulate import SimulateParticles

__all__ = ["ReconstructFourier", "SimulateParticles"]
