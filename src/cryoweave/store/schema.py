"""SQLAlchemy models of the project database: runs, steps, sets and their items, events.

Item tables have typed columns for what the framework uses and one JSON column (``extra``) for
pass-through metadata, so that STAR in → STAR out loses no column. ``seq`` is the set version
at which an item was published: streaming consumers read items with ``seq`` above their cursor.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# the schema's version: SCHEMA_VERSION is also written to ``meta`` (for cryoweave releases from
# before migrations, which refuse a newer number); HEAD_REVISION is the newest alembic revision
# in store/migrations/versions (a test checks that they agree)
SCHEMA_VERSION = 1
HEAD_REVISION = "0001"


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


def _now() -> float:
    return time.time()


class Meta(Base):
    """Key/value facts about the project (schema version, creation time)."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    label: Mapped[str | None] = mapped_column(String(200), unique=True)
    protocol: Mapped[str] = mapped_column(String(200))  # plugin:ClassName
    schema_version: Mapped[int] = mapped_column(Integer, default=1)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="saved")
    error: Mapped[str | None] = mapped_column(Text)
    folder: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[float] = mapped_column(Float, default=_now)
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    pid: Mapped[int | None] = mapped_column(Integer)
    host: Mapped[str | None] = mapped_column(String(200))
    stop_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # the queue the run's steps go to (added after schema 1 by a guarded ALTER; baseline since)
    queue: Mapped[str | None] = mapped_column(String(100))


class StepRow(Base):
    __tablename__ = "steps"
    __table_args__ = (UniqueConstraint("run_id", "key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(300))
    func: Mapped[str] = mapped_column(String(300))
    args: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    after: Mapped[list[Any]] = mapped_column(JSON, default=list)
    outputs: Mapped[list[Any]] = mapped_column(JSON, default=list)
    resources: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    content_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    published: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # output -> [set_id, seq]
    error: Mapped[str | None] = mapped_column(Text)
    created_seq: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)


class SetRow(Base):
    __tablename__ = "sets"
    __table_args__ = (UniqueConstraint("run_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(8), default="open")
    version: Mapped[int] = mapped_column(Integer, default=0)
    properties: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[float] = mapped_column(Float, default=_now)


class OpticsGroupRow(Base):
    __tablename__ = "optics_groups"
    set_id: Mapped[int] = mapped_column(
        ForeignKey("sets.id", ondelete="CASCADE"), primary_key=True
    )
    group_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    pixel_size_a: Mapped[float | None] = mapped_column(Float)
    box_px: Mapped[int | None] = mapped_column(Integer)
    voltage_kv: Mapped[float | None] = mapped_column(Float)
    cs_mm: Mapped[float | None] = mapped_column(Float)
    amplitude_contrast: Mapped[float | None] = mapped_column(Float)
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class _Item:
    """Columns every item table has."""

    set_id: Mapped[int] = mapped_column(
        ForeignKey("sets.id", ondelete="CASCADE"), primary_key=True
    )
    item_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer, default=0)
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class ParticleRow(_Item, Base):
    __tablename__ = "particles"
    __table_args__ = (Index("ix_particles_set_seq", "set_id", "seq"),)
    image_path: Mapped[str | None] = mapped_column(String(1000))
    image_index: Mapped[int | None] = mapped_column(Integer)  # 0-based index in the stack
    micrograph_id: Mapped[int | None] = mapped_column(Integer)
    micrograph_name: Mapped[str | None] = mapped_column(String(1000))
    coord_x_px: Mapped[float | None] = mapped_column(Float)
    coord_y_px: Mapped[float | None] = mapped_column(Float)
    defocus_u_a: Mapped[float | None] = mapped_column(Float)
    defocus_v_a: Mapped[float | None] = mapped_column(Float)
    defocus_angle_deg: Mapped[float | None] = mapped_column(Float)
    phase_shift_deg: Mapped[float | None] = mapped_column(Float)
    ctf_bfactor: Mapped[float | None] = mapped_column(Float)
    ctf_scale: Mapped[float | None] = mapped_column(Float)
    rot_deg: Mapped[float | None] = mapped_column(Float)
    tilt_deg: Mapped[float | None] = mapped_column(Float)
    psi_deg: Mapped[float | None] = mapped_column(Float)
    shift_x_a: Mapped[float | None] = mapped_column(Float)
    shift_y_a: Mapped[float | None] = mapped_column(Float)
    optics_group: Mapped[int | None] = mapped_column(Integer)
    half: Mapped[int | None] = mapped_column(Integer)
    weight: Mapped[float | None] = mapped_column(Float)
    score: Mapped[float | None] = mapped_column(Float)


class MicrographRow(_Item, Base):
    __tablename__ = "micrographs"
    __table_args__ = (Index("ix_micrographs_set_seq", "set_id", "seq"),)
    path: Mapped[str] = mapped_column(String(1000))
    name: Mapped[str | None] = mapped_column(String(1000))
    width_px: Mapped[int | None] = mapped_column(Integer)
    height_px: Mapped[int | None] = mapped_column(Integer)
    pixel_size_a: Mapped[float | None] = mapped_column(Float)
    optics_group: Mapped[int | None] = mapped_column(Integer)
    defocus_u_a: Mapped[float | None] = mapped_column(Float)
    defocus_v_a: Mapped[float | None] = mapped_column(Float)
    defocus_angle_deg: Mapped[float | None] = mapped_column(Float)
    phase_shift_deg: Mapped[float | None] = mapped_column(Float)


class VolumeRow(_Item, Base):
    __tablename__ = "volumes"
    __table_args__ = (Index("ix_volumes_set_seq", "set_id", "seq"),)
    path: Mapped[str] = mapped_column(String(1000))
    half1_path: Mapped[str | None] = mapped_column(String(1000))
    half2_path: Mapped[str | None] = mapped_column(String(1000))
    pixel_size_a: Mapped[float | None] = mapped_column(Float)
    box_px: Mapped[int | None] = mapped_column(Integer)


class RecordRow(_Item, Base):
    """Generic JSON items (FSC curves, per-iteration statistics)."""

    __tablename__ = "records"
    __table_args__ = (Index("ix_records_set_seq", "set_id", "seq"),)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class StreamCursor(Base):
    __tablename__ = "stream_cursors"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    input_name: Mapped[str] = mapped_column(String(100), primary_key=True)
    set_id: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(Integer, default=0)  # last consumed set version
    next_item_id: Mapped[int] = mapped_column(Integer, default=1)  # for watch streams


class StreamUnit(Base):
    """A unit of the outside world (a settled file) that a watch stream has turned into a step."""

    __tablename__ = "stream_units"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    stream: Mapped[str] = mapped_column(String(100), primary_key=True)
    unit_key: Mapped[str] = mapped_column(String(1000), primary_key=True)
    step_key: Mapped[str] = mapped_column(String(300))


class Event(Base):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int | None] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE"), index=True
    )
    time: Mapped[float] = mapped_column(Float, default=_now)
    level: Mapped[str] = mapped_column(String(10), default="info")
    kind: Mapped[str] = mapped_column(String(40))
    message: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)


ITEM_TABLES = {
    "particles": ParticleRow,
    "micrographs": MicrographRow,
    "volumes": VolumeRow,
    "records": RecordRow,
}
