"""Built-in protocols, registered through the ``cryoweave.plugins`` entry point (``PLUGIN``).

``PLUGIN`` names each protocol by reference (``module:Class``): the registry imports a
protocol's module when that protocol is asked for, so a light command such as
``cryoweave form Downsample`` does not import the others (nor numpy, pandas, the engine).
The protocol classes are also importable from here; they load on first use (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import Any

from cryoweave import __version__
from cryoweave.plugin import Plugin

_MODULES = {
    "ImportParticles": "cryoweave.protocols.import_particles",
    "ImportMicrographs": "cryoweave.protocols.import_micrographs",
    "ImportVolume": "cryoweave.protocols.import_volume",
    "Downsample": "cryoweave.protocols.downsample.protocol",
    "PreprocessMicrographs": "cryoweave.protocols.preprocess",
    "SimulateParticles": "cryoweave.protocols.reconstruction.simulate",
    "ReconstructFourier": "cryoweave.protocols.reconstruction.reconstruct_fourier",
    "ReconstructHighRes": "cryoweave.protocols.highres",
    "ProcessVolume": "cryoweave.protocols.process_volume",
}

PLUGIN = Plugin(
    name="cryoweave",
    version=__version__,
    protocols=tuple(f"{module}:{name}" for name, module in _MODULES.items()),
    description="cryoweave's built-in protocols",
)

__all__ = ["PLUGIN", *sorted(_MODULES)]


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULES[name]), name)
