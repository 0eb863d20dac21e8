"""Typed sets: particles, micrographs, volumes and records, queried without SQL strings.

A set has a state (``open`` | ``closed``), a version that grows with every publication, typed
properties (pixel size, acquisition, phase-flipped, has-CTF, has-poses, ...) and items with
stable ids. Filters use the typed columns of the item class, e.g.
``particles.query().filter(ParticleSet.fields.defocus_u_a > 1e4, half=1).batches(5000)``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
from sqlalchemy import (
    Column,
    ColumnElement,
    Integer,
    MetaData,
    Table,
    Text,
    delete,
    func,
    insert,
    literal,
    select,
    type_coerce,
    update,
)
from sqlalchemy.orm import Session

from cryoweave.errors import StorageError
from cryoweave.workflow._items import bulk_insert, frame_to_rows, rows_to_frame, typed_columns
from cryoweave.workflow._schema import (
    MicrographRow,
    OpticsGroupRow,
    ParticleRow,
    RecordRow,
    SetRow,
    VolumeRow,
)

if TYPE_CHECKING:
    from cryoweave.workflow._project import Project

OPTICS_COLUMNS = ["group_id", "name", "pixel_size_a", "box_px", "voltage_kv", "cs_mm",
                  "amplitude_contrast"]


class SetQuery:
    """An immutable query over one set's items: filter, order, seq window, then read."""

    def __init__(self, handle: SetHandle, filters: tuple = (), order: tuple = (),
                 seq_window: tuple[int | None, int | None] = (None, None)):
        self.handle = handle
        self._filters = filters
        self._order = order
        self._seq_window = seq_window

    def filter(self, *conditions: ColumnElement[bool], **equals: Any) -> SetQuery:
        """Keep items matching every condition (typed column expressions) and ``name=value``."""
        cls = self.handle.fields
        extra = tuple(getattr(cls, k) == v for k, v in equals.items())
        return SetQuery(self.handle, self._filters + conditions + extra, self._order,
                        self._seq_window)

    def order_by(self, *columns: Any) -> SetQuery:
        return SetQuery(self.handle, self._filters, self._order + columns, self._seq_window)

    def published_between(self, after_seq: int | None, upto_seq: int | None) -> SetQuery:
        """Items published at a set version in ``(after_seq, upto_seq]`` (streaming cursors)."""
        return SetQuery(self.handle, self._filters, self._order, (after_seq, upto_seq))

    def _where(self, stmt: Any) -> Any:
        cls = self.handle.fields
        stmt = stmt.where(cls.set_id == self.handle.id, *self._filters)
        after, upto = self._seq_window
        if after is not None:
            stmt = stmt.where(cls.seq > after)
        if upto is not None:
            stmt = stmt.where(cls.seq <= upto)
        return stmt

    def count(self) -> int:
        with self.handle.project.reader() as s:
            return int(s.scalar(self._where(select(func.count()).select_from(self.handle.table))))

    def item_ids(self) -> np.ndarray:
        cls = self.handle.fields
        stmt = self._where(select(cls.item_id)).order_by(*(self._order or (cls.item_id,)))
        with self.handle.project.reader() as s:
            return np.asarray(s.scalars(stmt).all(), dtype=np.int64)

    def batches(self, batch_size: int = 10000, *, with_extra: bool = True,
                columns: Sequence[str] | None = None) -> Iterator[pd.DataFrame]:
        """Items as DataFrames of at most ``batch_size`` rows, from one consistent snapshot."""
        table = self.handle.table
        names = list(columns) if columns else typed_columns(table)
        if "item_id" not in names:
            names.insert(0, "item_id")
        if with_extra and "extra" not in names:
            names.append("extra")
        cls = self.handle.fields
        # extra is fetched as text and decoded per batch (one json.loads, not one per row)
        selected = [type_coerce(table.c[n], Text) if n == "extra" else table.c[n] for n in names]
        stmt = self._where(select(*selected))
        stmt = stmt.order_by(*(self._order or (cls.item_id,)))
        with self.handle.project.engine.connect() as conn, conn.begin():
            result = conn.execution_options(stream_results=True, yield_per=batch_size).execute(
                stmt
            )
            while rows := result.fetchmany(batch_size):
                yield rows_to_frame(rows, names, table, with_extra=with_extra)

    def frame(self, *, with_extra: bool = True, columns: Sequence[str] | None = None
              ) -> pd.DataFrame:
        """All matching items in one DataFrame (empty frame with the columns if none)."""
        parts = list(self.batches(200000, with_extra=with_extra, columns=columns))
        if not parts:
            names = list(columns) if columns else typed_columns(self.handle.table)
            return pd.DataFrame(columns=names)
        return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]


class SetHandle:
    """A handle on one set of a project; cheap to create, reads go to the database."""

    kind: ClassVar[str] = ""
    fields: ClassVar[Any] = None  # the ORM item class: typed columns for filters
    importer: ClassVar[tuple[str, str] | None] = None  # (protocol, path param) for paths

    def __init__(self, project: Project, set_id: int):
        self.project = project
        self.id = set_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id})"

    @property
    def table(self) -> Any:
        return self.fields.__table__

    # -- set-level facts -------------------------------------------------------------------
    def row(self) -> SetRow:
        with self.project.reader() as s:
            row = s.get(SetRow, self.id)
            if row is None:
                raise StorageError(f"set {self.id} does not exist")
            s.expunge(row)
            return row

    @property
    def state(self) -> str:
        return self.row().state

    @property
    def is_closed(self) -> bool:
        return self.state == "closed"

    @property
    def version(self) -> int:
        return self.row().version

    @property
    def properties(self) -> dict[str, Any]:
        return dict(self.row().properties or {})

    @property
    def name(self) -> str:
        return self.row().name

    @property
    def run_id(self) -> int | None:
        return self.row().run_id

    # -- reading ---------------------------------------------------------------------------
    def query(self) -> SetQuery:
        return SetQuery(self)

    def count(self) -> int:
        return self.query().count()

    def __len__(self) -> int:
        return self.count()

    def iter_batches(self, batch_size: int = 10000, **kwargs: Any) -> Iterator[pd.DataFrame]:
        return self.query().batches(batch_size, **kwargs)

    def to_frame(self, **kwargs: Any) -> pd.DataFrame:
        return self.query().frame(**kwargs)

    def item_ids(self) -> np.ndarray:
        return self.query().item_ids()

    def optics(self) -> pd.DataFrame:
        """Optics groups (RELION ``data_optics``): typed columns plus pass-through ones."""
        with self.project.reader() as s:
            rows = s.scalars(
                select(OpticsGroupRow).where(OpticsGroupRow.set_id == self.id)
                .order_by(OpticsGroupRow.group_id)
            ).all()
            records = [
                {**{c: getattr(r, c) for c in OPTICS_COLUMNS}, **(r.extra or {})} for r in rows
            ]
        frame = pd.DataFrame.from_records(records)
        if frame.empty:
            return pd.DataFrame(columns=OPTICS_COLUMNS)
        return frame

    # -- writing (used by the runtime; each call is one transaction unless given a session) --
    def _in(self, session: Session | None) -> Any:
        from contextlib import nullcontext

        return nullcontext(session) if session is not None else self.project.transaction()

    def append(self, items: pd.DataFrame, *, session: Session | None = None) -> int:
        """Publish items as one new set version; returns that version (the items' ``seq``)."""
        with self._in(session) as s:
            return append_items(s, self, items)

    def set_optics(self, optics: pd.DataFrame, *, session: Session | None = None) -> None:
        with self._in(session) as s:
            put_optics(s, self.id, optics)

    def update_properties(self, *, session: Session | None = None, **props: Any) -> None:
        with self._in(session) as s:
            row = s.get(SetRow, self.id)
            row.properties = {**(row.properties or {}), **props}

    def close(self, *, session: Session | None = None) -> None:
        with self._in(session) as s:
            s.execute(update(SetRow).where(SetRow.id == self.id)
                      .values(state="closed", version=SetRow.version + 1))


def append_items(session: Session, handle: SetHandle, items: pd.DataFrame) -> int:
    """Insert ``items`` into ``handle``'s set at a new version; returns the version."""
    row = session.get(SetRow, handle.id, with_for_update=True)
    if row is None:
        raise StorageError(f"set {handle.id} does not exist")
    session.refresh(row)
    version = row.version + 1
    frame = items
    if "item_id" not in frame.columns:
        start = (session.scalar(
            select(func.max(handle.fields.item_id)).where(handle.fields.set_id == handle.id)
        ) or 0) + 1
        frame = frame.copy()
        frame.insert(0, "item_id", np.arange(start, start + len(frame), dtype=np.int64))
    names, rows = frame_to_rows(frame, handle.table, set_id=handle.id, seq=version)
    bulk_insert(session.connection(), handle.table, names, rows)
    row.version = version
    session.flush()
    return version


def derive_items(session: Session, source: SetHandle, target: SetHandle,
                 updates: pd.DataFrame) -> int:
    """Publish ``source`` items listed in ``updates`` into ``target`` with columns replaced.

    Rows are copied in SQL (ids and pass-through metadata kept), then the typed columns of
    ``updates`` are written and its other columns merged into the pass-through metadata; all
    at one new version of ``target``, which is returned.
    """
    if type(source) is not type(target):
        raise StorageError(f"cannot derive a {target.kind} set from a {source.kind} set")
    table = source.table
    typed = set(typed_columns(table))
    changed = [c for c in updates.columns if c != "item_id" and c in typed]
    extra_columns = [c for c in updates.columns if c != "item_id" and c not in typed]
    row = session.get(SetRow, target.id, with_for_update=True)
    session.refresh(row)
    version = row.version + 1
    conn = session.connection()
    conn.exec_driver_sql("CREATE TEMP TABLE IF NOT EXISTS cw_item_ids "
                         "(item_id INTEGER PRIMARY KEY)")
    conn.exec_driver_sql("DELETE FROM cw_item_ids")
    ids = [(int(i),) for i in updates["item_id"]]
    bulk_insert(conn, _ID_TABLE, ["item_id"], ids)
    copied = [c for c in table.columns if c.name not in ("set_id", "seq")]
    ids_subquery = select(_ID_TABLE.c.item_id)
    session.execute(insert(table).from_select(
        ["set_id", "seq", *(c.name for c in copied)],
        select(literal(target.id), literal(version), *copied).where(
            table.c.set_id == source.id, table.c.item_id.in_(ids_subquery))))
    if changed:
        marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        assignments = ", ".join(f"{c} = {marker}" for c in changed)
        sql = (f"UPDATE {table.name} SET {assignments} "
               f"WHERE set_id = {marker} AND item_id = {marker}")
        names, rows = frame_to_rows(updates[["item_id", *changed]], table, set_id=target.id,
                                    seq=version)
        position = {n: i for i, n in enumerate(names)}
        params = [(*(r[position[c]] for c in changed), target.id, r[position["item_id"]])
                  for r in rows]
        for start in range(0, len(params), 50000):
            conn.exec_driver_sql(sql, params[start:start + 50000])
    if extra_columns:
        _merge_extra(conn, table, target.id, updates[["item_id", *extra_columns]])
    row.version = version
    session.flush()
    return version


def _merge_extra(conn: Any, table: Any, set_id: int, updates: pd.DataFrame) -> None:
    """Merge ``updates``' columns into the items' pass-through metadata (JSON ``extra``)."""
    names, rows = frame_to_rows(updates, table, set_id=set_id, seq=0)
    position = names.index("extra")
    new_extra = {int(r[0]): json.loads(r[position]) if r[position] else {} for r in rows}
    ids = list(new_extra)
    marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    merged = []
    for start in range(0, len(ids), 30000):
        chunk = ids[start:start + 30000]
        current = conn.execute(select(table.c.item_id, type_coerce(table.c.extra, Text)).where(
            table.c.set_id == set_id, table.c.item_id.in_(chunk))).all()
        for item_id, stored in current:
            old = json.loads(stored) if isinstance(stored, str) else (stored or {})
            value = {**old, **new_extra[int(item_id)]}
            merged.append((json.dumps(value), set_id, int(item_id)))
    sql = f"UPDATE {table.name} SET extra = {marker} WHERE set_id = {marker} AND item_id = {marker}"
    for start in range(0, len(merged), 50000):
        conn.exec_driver_sql(sql, merged[start:start + 50000])


def retract_items(session: Session, handle: SetHandle, seq: int) -> int:
    """Remove the items published at version ``seq`` (a step that must be redone)."""
    result = session.execute(delete(handle.table).where(
        handle.table.c.set_id == handle.id, handle.table.c.seq == seq))
    session.execute(update(SetRow).where(SetRow.id == handle.id)
                    .values(version=SetRow.version + 1))
    return int(result.rowcount or 0)


_ID_TABLE = Table("cw_item_ids", MetaData(), Column("item_id", Integer, primary_key=True),
                  prefixes=["TEMPORARY"])


def put_optics(session: Session, set_id: int, optics: pd.DataFrame) -> None:
    """Insert or replace optics groups (by ``group_id``); other columns go to ``extra``."""
    for record in optics.to_dict("records"):
        group_id = int(record["group_id"])
        typed = {c: _none_if_nan(record.get(c)) for c in OPTICS_COLUMNS if c != "group_id"}
        if typed.get("box_px") is not None:
            typed["box_px"] = int(typed["box_px"])
        extra = {k: _none_if_nan(v) for k, v in record.items() if k not in OPTICS_COLUMNS}
        existing = session.get(OpticsGroupRow, (set_id, group_id))
        if existing is None:
            session.add(OpticsGroupRow(set_id=set_id, group_id=group_id, extra=extra or None,
                                       **typed))
        else:
            for key, value in typed.items():
                setattr(existing, key, value)
            existing.extra = extra or None
    session.flush()


def _none_if_nan(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def create_set(session: Session, run_id: int | None, name: str, set_type: type[SetHandle],
               properties: dict[str, Any] | None = None) -> int:
    row = SetRow(run_id=run_id, name=name, kind=set_type.kind, state="open", version=0,
                 properties=dict(properties or {}))
    session.add(row)
    session.flush()
    return row.id


def derive_set(session: Session, source: SetHandle, run_id: int | None, name: str,
               *conditions: ColumnElement[bool], item_ids: Sequence[int] | None = None,
               close: bool = True) -> int:
    """A subset (or copy) of ``source`` keeping item ids, optics groups and properties."""
    src_row = session.get(SetRow, source.id)
    new_id = create_set(session, run_id, name, type(source), dict(src_row.properties or {}))
    table = source.table
    cols = [c for c in table.columns if c.name != "set_id"]
    target = ["set_id"] + [c.name for c in cols]
    sel = select(literal(new_id).label("set_id"), *cols).where(table.c.set_id == source.id,
                                                               *conditions)
    if item_ids is None:
        session.execute(insert(table).from_select(target, sel))
    else:
        ids = [int(i) for i in item_ids]
        for start in range(0, len(ids), 30000):
            chunk = sel.where(table.c.item_id.in_(ids[start:start + 30000]))
            session.execute(insert(table).from_select(target, chunk))
    for group in session.scalars(select(OpticsGroupRow).where(OpticsGroupRow.set_id == source.id)):
        session.add(OpticsGroupRow(**{**{c.name: getattr(group, c.name)
                                         for c in OpticsGroupRow.__table__.columns},
                                      "set_id": new_id}))
    new_row = session.get(SetRow, new_id)
    new_row.version = 1
    if close:
        new_row.state = "closed"
    session.flush()
    return new_id


# -- the set types ---------------------------------------------------------------------------
class ParticleSet(SetHandle):
    """Particle images with CTF, poses (shifts in Å), optics groups and half subsets."""

    kind = "particles"
    fields = ParticleRow
    importer = ("ImportParticles", "path")


class MicrographSet(SetHandle):
    """Micrographs (one MRC each) with acquisition properties and optional CTF."""

    kind = "micrographs"
    fields = MicrographRow
    importer = ("ImportMicrographs", "pattern")


class VolumeSet(SetHandle):
    """Volumes (maps) with optional half maps."""

    kind = "volumes"
    fields = VolumeRow
    importer = ("ImportVolume", "path")


class RecordSet(SetHandle):
    """Generic JSON records (FSC curves, per-iteration statistics)."""

    kind = "records"
    fields = RecordRow


SET_TYPES: dict[str, type[SetHandle]] = {
    t.kind: t for t in (ParticleSet, MicrographSet, VolumeSet, RecordSet)
}


def set_handle(project: Project, set_id: int, kind: str | None = None) -> SetHandle:
    if kind is None:
        with project.reader() as s:
            row = s.get(SetRow, set_id)
            if row is None:
                raise StorageError(f"set {set_id} does not exist")
            kind = row.kind
    return SET_TYPES[kind](project, set_id)
