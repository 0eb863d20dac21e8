"""The ORM classes the writers use, mapped onto the Core tables of :mod:`cryoweave.store.tables`
(the one definition of the schema; see there for what the tables hold).

Reading goes through :mod:`cryoweave.store.queries`, which needs only the tables: importing
this module (and the ORM) is for code that writes.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import DeclarativeBase

from cryoweave.store import tables
from cryoweave.store.tables import HEAD_REVISION, SCHEMA_VERSION

__all__ = ["HEAD_REVISION", "ITEM_TABLES", "SCHEMA_VERSION", "Base", "Event", "Meta",
           "MicrographRow", "OpticsGroupRow", "ParticleRow", "RecordRow", "Run", "SetRow",
           "StepRow", "StreamCursor", "StreamUnit", "VolumeRow"]


class Base(DeclarativeBase):
    metadata = tables.metadata


class Meta(Base):
    """Key/value facts about the project (schema version, creation time)."""

    __table__ = tables.meta


class Run(Base):
    __table__ = tables.runs


class StepRow(Base):
    __table__ = tables.steps


class SetRow(Base):
    __table__ = tables.sets


class OpticsGroupRow(Base):
    __table__ = tables.optics_groups


class ParticleRow(Base):
    __table__ = tables.particles


class MicrographRow(Base):
    __table__ = tables.micrographs


class VolumeRow(Base):
    __table__ = tables.volumes


class RecordRow(Base):
    """Generic JSON items (FSC curves, per-iteration statistics)."""

    __table__ = tables.records


class StreamCursor(Base):
    __table__ = tables.stream_cursors


class StreamUnit(Base):
    """A unit of the outside world (a settled file) that a watch stream has turned into a step."""

    __table__ = tables.stream_units


class Event(Base):
    __table__ = tables.events


ITEM_TABLES: dict[str, Any] = {
    "particles": ParticleRow,
    "micrographs": MicrographRow,
    "volumes": VolumeRow,
    "records": RecordRow,
}
