"""Built-in protocols, registered through the ``cryoweave.plugins`` entry point (``PLUGIN``).

``PLUGIN`` names each protocol by reference (``module:Class``): the registry imports a
protocol's module when that protocol is asked for, so a light command such as
``cryoweave form Downsample`` does not import the others (nor numpy, pandas, the engine).
The protocol classes and ``PLUGIN`` are also importable from here; they load on first use
(PEP 562), so a helper module of one protocol loads neither the others nor the plugin API.
"""

from __future__ import annotations

import importlib
from typing import Any

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



def _plugin() -> Any:
    from cryoweave import __version__
    from cryoweave.plugin import Plugin

    return Plugin(
        name="cryoweave",
        version=__version__,
        protocols=tuple(f"{module}:{name}" for name, module in _MODULES.items()),
        description="cryoweave's built-in protocols",
    )

__all__ = ["PLUGIN", *sorted(_MODULES)]


def __getattr__(name: str) -> Any:
    if name == "PLUGIN":  # made on first use: the stand-alone downsample needs no plugin API
        globals()["PLUGIN"] = _plugin()
        return globals()["PLUGIN"]
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULES[name]), name)
