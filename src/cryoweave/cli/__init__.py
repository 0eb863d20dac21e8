"""The ``cryoweave`` command and its ``run-protocol`` alias (console scripts in pyproject.toml).

``python -m cryoweave.cli ARGS`` runs the same command (runner subprocesses use it).
"""

from cryoweave.cli._main import main, run_protocol_main

__all__ = ["main", "run_protocol_main"]
