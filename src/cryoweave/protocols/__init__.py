"""Built-in protocols, registered through the ``cryoweave.plugins`` entry point (``PLUGIN``)."""

from cryoweave import __version__
from cryoweave.plugin import Plugin
from cryoweave.protocols.downsample import Downsample
from cryoweave.protocols.highres import ReconstructHighRes
from cryoweave.protocols.import_micrographs import ImportMicrographs
from cryoweave.protocols.import_particles import ImportParticles
from cryoweave.protocols.import_volume import ImportVolume
from cryoweave.protocols.preprocess import PreprocessMicrographs
from cryoweave.protocols.process_volume import ProcessVolume
from cryoweave.protocols.reconstruction import ReconstructFourier, SimulateParticles

PLUGIN = Plugin(
    name="cryoweave",
    version=__version__,
    protocols=(ImportParticles, ImportMicrographs, ImportVolume, Downsample,
               PreprocessMicrographs, SimulateParticles, ReconstructFourier,
               ReconstructHighRes, ProcessVolume),
    description="cryoweave's built-in protocols",
)

__all__ = [
    "PLUGIN",
    "Downsample",
    "ImportMicrographs",
    "ImportParticles",
    "ImportVolume",
    "PreprocessMicrographs",
    "ProcessVolume",
    "ReconstructFourier",
    "ReconstructHighRes",
    "SimulateParticles",
]
