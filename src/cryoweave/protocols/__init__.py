"""Built-in protocols, registered through the ``cryoweave.plugins`` entry point (``PLUGIN``).

The protocol classes and ``PLUGIN`` are imported on first use (PEP 562), so that importing a
helper module of one protocol (e.g. the stand-alone ``cryoweave downsample``) does not load
every protocol, the authoring API and the workflow runtime.
"""

from __future__ import annotations

import importlib
from typing import Any

_CLASSES = {
    "Downsample": "cryoweave.protocols.downsample",
    "ImportMicrographs": "cryoweave.protocols.import_micrographs",
    "ImportParticles": "cryoweave.protocols.import_particles",
    "ImportVolume": "cryoweave.protocols.import_volume",
    "PreprocessMicrographs": "cryoweave.protocols.preprocess",
    "ProcessVolume": "cryoweave.protocols.process_volume",
    "ReconstructFourier": "cryoweave.protocols.reconstruction",
    "ReconstructHighRes": "cryoweave.protocols.highres",
    "SimulateParticles": "cryoweave.protocols.reconstruction",
}
# the order in which the plugin lists its protocols
_PLUGIN_ORDER = ("ImportParticles", "ImportMicrographs", "ImportVolume", "Downsample",
                 "PreprocessMicrographs", "SimulateParticles", "ReconstructFourier",
                 "ReconstructHighRes", "ProcessVolume")


def _plugin() -> Any:
    from cryoweave import __version__
    from cryoweave.plugin import Plugin

    return Plugin(name="cryoweave", version=__version__,
                  protocols=tuple(__getattr__(name) for name in _PLUGIN_ORDER),
                  description="cryoweave's built-in protocols")


def __getattr__(name: str) -> Any:
    if name == "PLUGIN":
        value = _plugin()
    elif name in _CLASSES:
        value = getattr(importlib.import_module(_CLASSES[name]), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # once
    return value


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
