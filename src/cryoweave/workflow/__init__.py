"""The workflow runtime: project database, typed sets, streaming and the runner.

The runner lives in :mod:`cryoweave.workflow.runner` (it imports the plugin API, which in turn
uses the set types defined here).
"""

from cryoweave.workflow._config import (
    POST_SCRIPT_ENV,
    PROJECT_CONFIG,
    Config,
    QueueConfig,
    load_config,
    post_script_allowed,
)
from cryoweave.workflow._project import Project
from cryoweave.workflow._report import protocol_dict, run_dict, set_dict
from cryoweave.workflow._sets import (
    SET_TYPES,
    MicrographSet,
    ParticleSet,
    RecordSet,
    SetHandle,
    SetQuery,
    VolumeSet,
    set_handle,
)

__all__ = [
    "POST_SCRIPT_ENV",
    "PROJECT_CONFIG",
    "SET_TYPES",
    "Config",
    "MicrographSet",
    "ParticleSet",
    "Project",
    "QueueConfig",
    "RecordSet",
    "SetHandle",
    "SetQuery",
    "VolumeSet",
    "load_config",
    "post_script_allowed",
    "protocol_dict",
    "run_dict",
    "set_dict",
    "set_handle",
]
