"""The project database: engine and transactions, schema, typed sets, writers and queries.

:class:`Project` opens a project (folder + database, migrated to the current schema);
the set types (:class:`ParticleSet`, ...) read and write items without SQL strings;
:mod:`cryoweave.store.queries` is the read API the CLI and the GUI use;
:mod:`cryoweave.store.writers` publishes items inside the runtime's transactions;
:mod:`cryoweave.store.schema` holds the SQLAlchemy models.

The names below load on first use (PEP 562): the set types import SQLAlchemy only when they
read or write, so that `cryoweave form` (which declares inputs by set type) does not import it.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DB_FILENAME": "_project",
    "MAX_LABEL_LENGTH": "_labels",
    "MAX_DB_INTEGER": "_project",
    "label_problem": "_labels",
    "Project": "_project",
    "pid_alive": "_project",
    "run_folder_name": "_project",
    "SET_TYPES": "_sets",
    "MicrographSet": "_sets",
    "ParticleSet": "_sets",
    "RecordSet": "_sets",
    "SetHandle": "_sets",
    "SetQuery": "_sets",
    "VolumeSet": "_sets",
    "set_handle": "_sets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
