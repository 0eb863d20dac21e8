"""The project database's tables (SQLAlchemy Core): runs, steps, sets and their items, events.

This is the one definition of the schema. The read API (:mod:`cryoweave.store.queries`) works
on these tables alone, so that `cryoweave runs` and `show` never import the ORM; the ORM
classes the writers use (:mod:`cryoweave.store.schema`) are mapped onto the same tables.

Item tables have typed columns for what the framework uses and one JSON column (``extra``) for
pass-through metadata, so that STAR in → STAR out loses no column. ``seq`` is the set version
at which an item was published: streaming consumers read items with ``seq`` above their cursor.
"""

from __future__ import annotations

import time

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

# the schema's version: SCHEMA_VERSION is also written to ``meta`` (for cryoweave releases from
# before migrations, which refuse a newer number); HEAD_REVISION is the newest alembic revision
# in store/migrations/versions (a test checks that they agree)
SCHEMA_VERSION = 2
HEAD_REVISION = "0002"

metadata = MetaData()


def _now() -> float:
    return time.time()


def _run_fk(*, nullable: bool, primary_key: bool = False, index: bool = False) -> Column:
    return Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"),
                  nullable=nullable, primary_key=primary_key, index=index)


# key/value facts about the project (schema version, creation time)
meta = Table(
    "meta", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

runs = Table(
    "runs", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("label", String(200), unique=True),
    Column("protocol", String(200), nullable=False),  # plugin:ClassName
    Column("schema_version", Integer, nullable=False, default=1),
    Column("params", JSON, nullable=False, default=dict),
    Column("status", String(16), nullable=False, default="saved"),
    Column("error", Text),
    Column("folder", String(500), nullable=False, default=""),
    Column("created_at", Float, nullable=False, default=_now),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("pid", Integer),
    Column("host", String(200)),
    Column("stop_requested", Boolean, nullable=False, default=False),
    # the queue the run's steps go to (added after schema 1 by a guarded ALTER; baseline since)
    Column("queue", String(100)),
    # the protocol's summary(), stored when the run finishes (revision 0002): `show` and the
    # GUI read it without importing the protocol
    Column("summary", JSON),
)

steps = Table(
    "steps", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _run_fk(nullable=False, index=True),
    Column("key", String(300), nullable=False),
    Column("func", String(300), nullable=False),
    Column("args", JSON, nullable=False, default=dict),
    Column("after", JSON, nullable=False, default=list),
    Column("outputs", JSON, nullable=False, default=list),
    Column("resources", JSON, nullable=False, default=dict),
    Column("content_hash", String(64), nullable=False),
    Column("status", String(16), nullable=False, default="pending"),
    Column("result", JSON),
    Column("published", JSON),  # output -> [set_id, seq]
    Column("error", Text),
    Column("created_seq", Integer, nullable=False, default=0),
    Column("started_at", Float),
    Column("finished_at", Float),
    UniqueConstraint("run_id", "key"),
)

sets = Table(
    "sets", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _run_fk(nullable=True),
    Column("name", String(100), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("state", String(8), nullable=False, default="open"),
    Column("version", Integer, nullable=False, default=0),
    Column("properties", JSON, nullable=False, default=dict),
    Column("created_at", Float, nullable=False, default=_now),
    UniqueConstraint("run_id", "name"),
)


def _set_fk() -> Column:
    return Column("set_id", Integer, ForeignKey("sets.id", ondelete="CASCADE"),
                  primary_key=True)


optics_groups = Table(
    "optics_groups", metadata,
    _set_fk(),
    Column("group_id", Integer, primary_key=True),
    Column("name", String(200)),
    Column("pixel_size_a", Float),
    Column("box_px", Integer),
    Column("voltage_kv", Float),
    Column("cs_mm", Float),
    Column("amplitude_contrast", Float),
    Column("extra", JSON),
)


def _item_table(name: str, *columns: Column) -> Table:
    """An item table: its typed columns, then the columns every item table has."""
    return Table(
        name, metadata, *columns,
        _set_fk(),
        Column("item_id", Integer, primary_key=True, autoincrement=False),
        Column("seq", Integer, nullable=False, default=0),
        Column("extra", JSON),
        Index(f"ix_{name}_set_seq", "set_id", "seq"),
    )


particles = _item_table(
    "particles",
    Column("image_path", String(1000)),
    Column("image_index", Integer),  # 0-based index in the stack
    Column("micrograph_id", Integer),
    Column("micrograph_name", String(1000)),
    Column("coord_x_px", Float),
    Column("coord_y_px", Float),
    Column("defocus_u_a", Float),
    Column("defocus_v_a", Float),
    Column("defocus_angle_deg", Float),
    Column("phase_shift_deg", Float),
    Column("ctf_bfactor", Float),
    Column("ctf_scale", Float),
    Column("rot_deg", Float),
    Column("tilt_deg", Float),
    Column("psi_deg", Float),
    Column("shift_x_a", Float),
    Column("shift_y_a", Float),
    Column("optics_group", Integer),
    Column("half", Integer),
    Column("weight", Float),
    Column("score", Float),
)

micrographs = _item_table(
    "micrographs",
    Column("path", String(1000), nullable=False),
    Column("name", String(1000)),
    Column("width_px", Integer),
    Column("height_px", Integer),
    Column("pixel_size_a", Float),
    Column("optics_group", Integer),
    Column("defocus_u_a", Float),
    Column("defocus_v_a", Float),
    Column("defocus_angle_deg", Float),
    Column("phase_shift_deg", Float),
)

volumes = _item_table(
    "volumes",
    Column("path", String(1000), nullable=False),
    Column("half1_path", String(1000)),
    Column("half2_path", String(1000)),
    Column("pixel_size_a", Float),
    Column("box_px", Integer),
)

# generic JSON items (FSC curves, per-iteration statistics)
records = _item_table("records", Column("data", JSON, nullable=False, default=dict))

stream_cursors = Table(
    "stream_cursors", metadata,
    _run_fk(nullable=False, primary_key=True),
    Column("input_name", String(100), primary_key=True),
    Column("set_id", Integer, nullable=False),
    Column("seq", Integer, nullable=False, default=0),  # last consumed set version
    Column("next_item_id", Integer, nullable=False, default=1),  # for watch streams
)

# a unit of the outside world (a settled file) that a watch stream has turned into a step
stream_units = Table(
    "stream_units", metadata,
    _run_fk(nullable=False, primary_key=True),
    Column("stream", String(100), primary_key=True),
    Column("unit_key", String(1000), primary_key=True),
    Column("step_key", String(300), nullable=False),
)

events = Table(
    "events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _run_fk(nullable=True, index=True),
    Column("time", Float, nullable=False, default=_now),
    Column("level", String(10), nullable=False, default="info"),
    Column("kind", String(40), nullable=False),
    Column("message", Text, nullable=False, default=""),
    Column("data", JSON),
)

# item kind -> its table
ITEMS: dict[str, Table] = {
    "particles": particles,
    "micrographs": micrographs,
    "volumes": volumes,
    "records": records,
}
