"""cryoweave: a protocol framework for cryo-EM image processing."""

from cryoweave.errors import CryoweaveError, InputError, ParamError, StepFailed, StorageError

__version__ = "0.1.0"

__all__ = [
    "CryoweaveError",
    "InputError",
    "ParamError",
    "StepFailed",
    "StorageError",
    "__version__",
]
