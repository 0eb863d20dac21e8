"""Typed sets: particles, micrographs, volumes and records, queried without SQL strings.

A set has a state (``open`` | ``closed``), a version that grows with every publication, typed
properties (pixel size, acquisition, phase-flipped, has-CTF, has-poses, ...) and items with
stable ids. Filters use the typed columns of the item class, e.g.
``particles.query().filter(ParticleSet.fields.defocus_u_a > 1e4, half=1).batches(5000)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from cryoweave.errors import StorageError
from cryoweave.physical import OPTICS_COLUMNS

if TYPE_CHECKING:  # numpy, pandas and SQLAlchemy load on use: `cryoweave form` needs none
    import numpy as np
    import pandas as pd
    from sqlalchemy import ColumnElement
    from sqlalchemy.orm import Session

    from cryoweave.store._project import Project
    from cryoweave.store.schema import SetRow


class _ItemClass:
    """``SetHandle.fields``: the ORM item class, imported from the schema on first use."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        from cryoweave.store import schema

        return getattr(schema, self.name)



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
        from sqlalchemy import func, select

        with self.handle.project.reader() as s:
            return int(s.scalar(self._where(select(func.count()).select_from(self.handle.table))))

    def item_ids(self) -> np.ndarray:
        from sqlalchemy import select

        cls = self.handle.fields
        stmt = self._where(select(cls.item_id)).order_by(*(self._order or (cls.item_id,)))
        import numpy as np

        with self.handle.project.reader() as s:
            return np.asarray(s.scalars(stmt).all(), dtype=np.int64)

    def batches(self, batch_size: int = 10000, *, with_extra: bool = True,
                columns: Sequence[str] | None = None) -> Iterator[pd.DataFrame]:
        """Items as DataFrames of at most ``batch_size`` rows, from one consistent snapshot."""
        from sqlalchemy import Text, select, type_coerce

        from cryoweave.store._items import rows_to_frame, typed_columns

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
        import pandas as pd

        from cryoweave.store._items import typed_columns

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
        from cryoweave.store.schema import SetRow

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
        import pandas as pd
        from sqlalchemy import select

        from cryoweave.store.schema import OpticsGroupRow

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
        from cryoweave.store.writers import append_items

        with self._in(session) as s:
            return append_items(s, self, items)

    def set_optics(self, optics: pd.DataFrame, *, session: Session | None = None) -> None:
        from cryoweave.store.writers import put_optics

        with self._in(session) as s:
            put_optics(s, self.id, optics)

    def update_properties(self, *, session: Session | None = None, **props: Any) -> None:
        from cryoweave.store.schema import SetRow

        with self._in(session) as s:
            row = s.get(SetRow, self.id)
            row.properties = {**(row.properties or {}), **props}

    def close(self, *, session: Session | None = None) -> None:
        from sqlalchemy import update

        from cryoweave.store.schema import SetRow

        with self._in(session) as s:
            s.execute(update(SetRow).where(SetRow.id == self.id)
                      .values(state="closed", version=SetRow.version + 1))


# -- the set types ---------------------------------------------------------------------------
class ParticleSet(SetHandle):
    """Particle images with CTF, poses (shifts in Å), optics groups and half subsets."""

    kind = "particles"
    fields = _ItemClass("ParticleRow")
    importer = ("ImportParticles", "path")


class MicrographSet(SetHandle):
    """Micrographs (one MRC each) with acquisition properties and optional CTF."""

    kind = "micrographs"
    fields = _ItemClass("MicrographRow")
    importer = ("ImportMicrographs", "pattern")


class VolumeSet(SetHandle):
    """Volumes (maps) with optional half maps."""

    kind = "volumes"
    fields = _ItemClass("VolumeRow")
    importer = ("ImportVolume", "path")


class RecordSet(SetHandle):
    """Generic JSON records (FSC curves, per-iteration statistics)."""

    kind = "records"
    fields = _ItemClass("RecordRow")


SET_TYPES: dict[str, type[SetHandle]] = {
    t.kind: t for t in (ParticleSet, MicrographSet, VolumeSet, RecordSet)
}


def set_handle(project: Project, set_id: int, kind: str | None = None) -> SetHandle:
    from cryoweave.store.schema import SetRow

    if kind is None:
        with project.reader() as s:
            row = s.get(SetRow, set_id)
            if row is None:
                raise StorageError(f"set {set_id} does not exist")
            kind = row.kind
    return SET_TYPES[kind](project, set_id)
