"""Site and project policy: what a params or workflow file may make cryoweave do.

Until the configuration system exists, the policy is read from two places:

- the environment variable ``CRYOWEAVE_ALLOW_POST_SCRIPT=1`` (site: set it for the users or the
  queue that may run post-processing commands);
- ``allow_post_script: true`` in the project's ``cryoweave.yaml`` (project root, next to
  ``project.sqlite``).
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from cryoweave.errors import InputError

POLICY_FILENAME = "cryoweave.yaml"
POST_SCRIPT_ENV = "CRYOWEAVE_ALLOW_POST_SCRIPT"


def post_script_allowed(project_root: str | Path | None) -> bool:
    """Whether a protocol may run a command given in its parameters (``post_script``).

    True when ``CRYOWEAVE_ALLOW_POST_SCRIPT`` is ``1`` or the project's ``cryoweave.yaml`` has
    ``allow_post_script: true``; a project that does not exist yet (``None``) has no file.
    Raises InputError, naming the file, for a file that is not a YAML mapping or an
    ``allow_post_script`` that is not true/false.
    """
    if os.environ.get(POST_SCRIPT_ENV, "").strip() == "1":
        return True
    if project_root is None:
        return False
    path = Path(project_root) / POLICY_FILENAME
    if not path.is_file():
        return False
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: not a valid UTF-8 YAML file ({exc}); fix or remove it") \
            from exc
    if data is None:
        return False
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of settings (e.g. "
                         "'allow_post_script: true'), got a YAML " + type(data).__name__)
    value = data.get("allow_post_script", False)
    if not isinstance(value, bool):
        raise InputError(f"{path}: allow_post_script must be true or false, got {value!r}")
    return value
