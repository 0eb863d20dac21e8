"""Writing sets: publish items (bulk), derive items from another set, optics groups,
retract a step's items, create and subset sets. Called by the runtime inside its transactions.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

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
from cryoweave.physical import OPTICS_COLUMNS
from cryoweave.store._items import bulk_insert, frame_to_rows, typed_columns
from cryoweave.store.schema import OpticsGroupRow, SetRow

if TYPE_CHECKING:  # numpy and pandas are imported on use: `cryoweave runs` needs neither
    import pandas as pd


class SetHandle(Protocol):
    """What the writers need of a set (:class:`cryoweave.store.SetHandle` has it); a protocol,
    so that the set types import the writers and not the other way round."""

    id: int
    kind: str
    fields: Any  # the ORM item class

    @property
    def table(self) -> Table: ...


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
        import numpy as np

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
    np = sys.modules.get("numpy")  # no numpy value exists before numpy is imported
    if np is not None and isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def create_set(session: Session, run_id: int | None, name: str, set_type: Any,
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
