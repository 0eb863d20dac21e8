"""The project database: engine and transactions, schema, typed sets, writers and queries.

:class:`Project` opens a project (folder + database, migrated to the current schema);
the set types (:class:`ParticleSet`, ...) read and write items without SQL strings;
:mod:`cryoweave.store.queries` is the read API the CLI and the GUI use;
:mod:`cryoweave.store.writers` publishes items inside the runtime's transactions;
:mod:`cryoweave.store.schema` holds the SQLAlchemy models.
"""

from cryoweave.store._project import DB_FILENAME, Project, pid_alive, run_folder_name
from cryoweave.store._sets import (
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
    "DB_FILENAME",
    "SET_TYPES",
    "MicrographSet",
    "ParticleSet",
    "Project",
    "RecordSet",
    "SetHandle",
    "SetQuery",
    "VolumeSet",
    "pid_alive",
    "run_folder_name",
    "set_handle",
]
