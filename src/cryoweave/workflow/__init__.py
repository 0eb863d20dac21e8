"""The workflow runtime: runner, streams, executors, configuration, workflows and export.

The project database and its typed sets live in :mod:`cryoweave.store`.
"""

from cryoweave.workflow._config import (
    POST_SCRIPT_ENV,
    PROJECT_CONFIG,
    Config,
    QueueConfig,
    load_config,
    post_script_allowed,
)
from cryoweave.workflow._report import protocol_dict, run_dict, set_dict

__all__ = [
    "POST_SCRIPT_ENV",
    "PROJECT_CONFIG",
    "Config",
    "QueueConfig",
    "load_config",
    "post_script_allowed",
    "protocol_dict",
    "run_dict",
    "set_dict",
]
