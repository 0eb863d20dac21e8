"""Read queries for browsing a project: runs, steps, events, outputs, lineage, set pages.

The CLI (``runs``, ``show``, ``workflow run``'s status), the web GUI and the run reports read
through these functions and never write SQL of their own. Each function is one or a few
queries, whatever the project's size, so a project of hundreds of runs and sets of a million
items stay fast. Results are plain JSON-ready dicts whose keys match
:func:`cryoweave.workflow.run_dict` where they overlap. The contract is tested on SQLite and
PostgreSQL (tests/store/test_queries_contract.py).

One module (a little over 400 lines) on purpose: it is the whole read API, in sections (runs,
one run, events, sets, streaming), and a reader looks for a query in one place.
"""

from __future__ import annotations

import datetime
import socket
import time
from typing import Any

from sqlalchemy import func, select

from cryoweave.errors import ParamError, StorageError
from cryoweave.store import tables
from cryoweave.store._items import typed_columns
from cryoweave.store._project import Project, no_run_message, pid_alive, run_id_of
from cryoweave.store.tables import ITEMS

# the columns of each table (Core only: reading never imports the ORM)
_run, _step, _set, _event = tables.runs.c, tables.steps.c, tables.sets.c, tables.events.c

PAGE_LIMIT_MAX = 500  # rows of a set page, whatever the request asks


def iso_time(timestamp: float | None) -> str | None:
    """A Unix time as ISO 8601 in UTC (``2026-11-27T17:02:55+00:00``); ``None`` stays."""
    if timestamp is None:
        return None
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat(timespec="seconds")


def process_gone(run: Any) -> bool:
    """A "running" run whose runner process (on this host) no longer exists."""
    if run.status != "running":
        return False
    if run.host and run.host != socket.gethostname():
        return False  # another machine's process: we cannot tell
    return not pid_alive(run.pid)


def run_state(run: Any) -> str:
    """The run's status, saying so when a "running" run's process (on this host) is gone."""
    return "running (process gone: continue it)" if process_gone(run) else run.status


def _run_row(run: Any, steps: dict[str, int], outputs: list[dict[str, Any]]) -> dict[str, Any]:
    duration = (run.finished_at - run.started_at) if run.started_at and run.finished_at else None
    return {
        "id": run.id, "label": run.label, "protocol": run.protocol,
        "protocol_name": run.protocol.split(":")[-1], "status": run.status,
        "state": run_state(run), "process_gone": process_gone(run), "error": run.error,
        "folder": run.folder, "queue": run.queue, "host": run.host,
        "created_at": iso_time(run.created_at), "started_at": iso_time(run.started_at),
        "finished_at": iso_time(run.finished_at),
        "duration_s": round(duration, 3) if duration is not None else None,
        "steps": steps, "outputs": outputs,
    }


def list_runs(project: Project, search: str | None = None, *, run_ids: list[int] | None = None,
              sizes: bool = False) -> list[dict[str, Any]]:
    """Every run with its step counts and outputs (name, kind, state, set id): three queries.

    ``search`` keeps runs whose label, protocol or status contains it (any case); ``run_ids``
    keeps those runs, in that order; ``sizes`` adds each output's item count (``size``), one
    grouped count per item table.
    """
    stmt = select(_run.id, _run.label, _run.protocol, _run.status, _run.error, _run.folder,
                  _run.queue, _run.created_at, _run.started_at, _run.finished_at, _run.pid,
                  _run.host)
    steps_stmt = select(_step.run_id, _step.status, func.count())
    sets_stmt = select(_set.id, _set.run_id, _set.name, _set.kind, _set.state,
                       _set.version)
    if run_ids is not None:
        stmt = stmt.where(_run.id.in_(run_ids))
        steps_stmt = steps_stmt.where(_step.run_id.in_(run_ids))
        sets_stmt = sets_stmt.where(_set.run_id.in_(run_ids))
    with project.snapshot() as s:
        runs = list(s.execute(stmt.order_by(_run.id)))
        step_rows = s.execute(steps_stmt.group_by(_step.run_id, _step.status)).all()
        set_rows = s.execute(sets_stmt.order_by(_set.id)).all()
        counts = _item_counts(s, [(r[0], r[3]) for r in set_rows]) if sizes else {}
    steps: dict[int, dict[str, int]] = {}
    for run_id, status, count in step_rows:
        steps.setdefault(run_id, {})[status] = int(count)
    outputs: dict[int, list[dict[str, Any]]] = {}
    for set_id, run_id, name, kind, state, version in set_rows:
        output = {"set": set_id, "name": name, "kind": kind, "state": state, "version": version}
        if sizes:
            output["size"] = counts.get(set_id, 0)
        outputs.setdefault(run_id, []).append(output)
    rows = [_run_row(run, steps.get(run.id, {}), outputs.get(run.id, [])) for run in runs]
    if run_ids is not None:
        position = {run_id: i for i, run_id in enumerate(run_ids)}
        rows.sort(key=lambda r: position[r["id"]])
    if search:
        needle = search.strip().lower()
        rows = [r for r in rows if any(needle in str(r[k] or "").lower()
                                       for k in ("label", "protocol", "state", "id"))]
    return rows


def _item_counts(session: Any, sets: list[tuple[int, str]]) -> dict[int, int]:
    """Item count per set id for ``(set id, kind)`` pairs: one grouped query per kind."""
    by_kind: dict[str, list[int]] = {}
    for set_id, kind in sets:
        by_kind.setdefault(kind, []).append(set_id)
    counts: dict[int, int] = {}
    for kind, ids in by_kind.items():
        table = ITEMS[kind]
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            counts.update((int(set_id), int(n)) for set_id, n in session.execute(
                select(table.c.set_id, func.count()).where(table.c.set_id.in_(chunk))
                .group_by(table.c.set_id)))
    return counts


# -- one run ----------------------------------------------------------------------------------
FAILED_ITEMS_KEY = "failed_item_ids"  # in a step's recorded result


def run_outputs(project: Project, run_id: int, *, sizes: bool = False) -> list[dict[str, Any]]:
    """The run's output sets by id: ``set``, ``name``, ``kind``, ``state``, ``version``
    (and ``size``, the item count, with ``sizes``)."""
    with project.snapshot() as s:
        rows = s.execute(select(_set.id, _set.name, _set.kind, _set.state,
                                _set.version).where(_set.run_id == run_id)
                         .order_by(_set.id)).all()
        counts = _item_counts(s, [(r[0], r[2]) for r in rows]) if sizes else {}
    outputs = []
    for set_id, name, kind, state, version in rows:
        output = {"set": set_id, "name": name, "kind": kind, "state": state, "version": version}
        if sizes:
            output["size"] = counts.get(set_id, 0)
        outputs.append(output)
    return outputs


def output_set_id(project: Project, run_id: int, name: str) -> int | None:
    """The id of the run's output set called ``name`` (None when it has none)."""
    with project.snapshot() as s:
        return s.scalar(select(_set.id).where(_set.run_id == run_id, _set.name == name))


def find_run(project: Project, ref: int | str) -> Any:
    """A run's row by id (int or digit string) or by label, None when there is none: a
    read-only record with the runs table's columns as attributes (``run.params``,
    ``run.summary``…), read without the ORM."""
    with project.snapshot() as s:
        run_id = run_id_of(ref)
        if run_id is not None:
            row = s.execute(select(tables.runs).where(_run.id == run_id)).first()
            if row is not None:
                return row
        return s.execute(select(tables.runs).where(_run.label == str(ref))).first()


def get_run(project: Project, ref: int | str) -> Any:
    """:func:`find_run`, refusing a reference to no run (the error says how to list them)."""
    run = find_run(project, ref)
    if run is None:
        raise StorageError(no_run_message(project, ref))
    return run


def run_records(project: Project) -> list[Any]:
    """Every run's row (as :func:`find_run` returns them), by id."""
    with project.snapshot() as s:
        return list(s.execute(select(tables.runs).order_by(_run.id)))


def run_id_for_label(project: Project, label: str) -> int | None:
    """The id of the run labelled ``label`` (None when no run has that label)."""
    with project.snapshot() as s:
        return s.scalar(select(_run.id).where(_run.label == label))


def step_counts(project: Project, run_id: int) -> dict[str, int]:
    """Steps of a run per status (``{"done": 12, "pending": 3}``), statuses sorted."""
    with project.snapshot() as s:
        rows = s.execute(select(_step.status, func.count()).where(
            _step.run_id == run_id).group_by(_step.status)).all()
    return {str(status): int(n) for status, n in sorted(rows)}


def step_devices(project: Project, run_id: int) -> dict[str, list[str]]:
    """Device (``cpu``/``gpu``) → keys of the run's steps that recorded it, in step order."""
    devices: dict[str, list[str]] = {}
    with project.snapshot() as s:
        for key, result in s.execute(select(_step.key, _step.result).where(
                _step.run_id == run_id).order_by(_step.id)).all():
            device = result.get("device") if isinstance(result, dict) else None
            if device:
                devices.setdefault(str(device), []).append(key)
    return devices


def step_results(project: Project, run_id: int) -> dict[str, dict[str, Any]]:
    """Step key → recorded result of the run's finished steps."""
    with project.snapshot() as s:
        return {key: dict(result or {}) for key, result in s.execute(
            select(_step.key, _step.result).where(_step.run_id == run_id,
                                                      _step.status == "done"))}


def failed_items(project: Project, run_id: int) -> tuple[int, str | None]:
    """(number of input items the finished steps of a run reported as failed, one message)."""
    with project.snapshot() as s:
        results = s.scalars(select(_step.result).where(_step.run_id == run_id,
                                                         _step.status == "done"))
        count = sum(len((r or {}).get(FAILED_ITEMS_KEY) or []) for r in results)
        message = s.scalar(select(_event.message).where(
            _event.run_id == run_id, _event.kind == "item_failed").order_by(_event.id.desc())
            .limit(1)) if count else None
    return count, message


def lineage(project: Project) -> list[dict[str, Any]]:
    """Data edges: which run's output set feeds which run's input (from the stored params)."""
    with project.snapshot() as s:
        producers = {set_id: (run_id, name) for set_id, run_id, name in s.execute(
            select(_set.id, _set.run_id, _set.name))}
        params = s.execute(select(_run.id, _run.params)).all()
    edges = []
    for run_id, stored in params:
        for input_name, value in (stored or {}).items():
            if isinstance(value, dict) and value.get("set") in producers:
                source, output = producers[value["set"]]
                if source is not None:
                    edges.append({"from": source, "output": output, "to": run_id,
                                  "input": input_name, "set": value["set"]})
    return edges


def dependents(project: Project, run_id: int) -> list[int]:
    """Runs that use an output of ``run_id`` as an input."""
    return sorted({e["to"] for e in lineage(project) if e["from"] == run_id and e["to"] != run_id})


def run_steps(project: Project, run_id: int, limit: int = 200) -> list[dict[str, Any]]:
    """The run's most recent steps (by id), newest last."""
    with project.snapshot() as s:
        rows = s.execute(select(_step.key, _step.status, _step.error, _step.started_at,
                                _step.finished_at).where(_step.run_id == run_id)
                         .order_by(_step.id.desc()).limit(limit)).all()
    return [{"key": k, "status": st, "error": err, "started_at": iso_time(a),
             "seconds": round(b - a, 3) if a and b else None}
            for k, st, err, a, b in reversed(rows)]


def run_events(project: Project, run_id: int | None = None, after_id: int = 0,
               limit: int = 200, *, level: str | None = None) -> list[dict[str, Any]]:
    """Events (newest ``limit`` after ``after_id``, oldest first) of one run, or of all runs;
    ``level`` keeps one level (``"error"``)."""
    stmt = select(tables.events).where(_event.id > after_id)
    if run_id is not None:
        stmt = stmt.where(_event.run_id == run_id)
    if level is not None:
        stmt = stmt.where(_event.level == level)
    with project.snapshot() as s:
        rows = list(s.execute(stmt.order_by(_event.id.desc()).limit(limit)))
        return [{"id": e.id, "run": e.run_id, "time": iso_time(e.time), "level": e.level,
                 "kind": e.kind, "message": e.message, "data": e.data} for e in reversed(rows)]


def change_marker(project: Project) -> dict[str, Any]:
    """A small fingerprint of the project that changes whenever something a page shows does:
    the last event, set versions, step counts, and runs whose process has gone."""
    with project.snapshot() as s:
        last_event = s.scalar(select(func.max(_event.id))) or 0
        versions = s.execute(select(func.count(_set.id), func.coalesce(
            func.sum(_set.version), 0))).one()
        steps = s.execute(select(func.count(_step.id)).where(
            _step.status.in_(("done", "failed")))).scalar() or 0
        running = s.execute(select(_run.id, _run.status, _run.pid, _run.host).where(
            _run.status == "running")).all()
        runs = s.scalar(select(func.count(_run.id))) or 0
    gone = sorted(r.id for r in running if process_gone(r))
    return {"event": last_event, "sets": int(versions[0]), "version": int(versions[1]),
            "steps": int(steps), "runs": int(runs), "gone": gone}


# -- sets ---------------------------------------------------------------------------------------
def set_info(project: Project, set_id: int) -> dict[str, Any]:
    with project.snapshot() as s:
        row = s.execute(select(tables.sets).where(_set.id == set_id)).first()
        if row is None:
            raise StorageError(f"set {set_id} does not exist")
        table = ITEMS[row.kind]
        size = s.scalar(select(func.count()).select_from(table).where(
            table.c.set_id == set_id)) or 0
        return {"set": row.id, "run": row.run_id, "name": row.name, "kind": row.kind,
                "state": row.state, "version": row.version, "size": int(size),
                "properties": row.properties or {},
                "columns": typed_columns(table)}


def open_sets(project: Project, set_ids: list[int]) -> list[tuple[Any, Any]]:
    """(set row, its run's row or None) for each of ``set_ids`` that is still open."""
    with project.snapshot() as s:
        rows = s.execute(select(tables.sets).where(_set.id.in_(list(set_ids)),
                                                   _set.state != "closed")).all()
        return [(row, s.execute(select(tables.runs).where(_run.id == row.run_id)).first())
                for row in rows]


def set_version(project: Project, set_id: int) -> int | None:
    """The set's version (it grows with every publication); None for a missing set."""
    with project.snapshot() as s:
        return s.scalar(select(_set.version).where(_set.id == set_id))


def set_size(project: Project, set_id: int) -> tuple[int, int]:
    """(item count, set version) of a set; the count is the same for the same version."""
    with project.snapshot() as s:
        row = s.execute(select(_set.kind, _set.version).where(_set.id == set_id)).first()
        if row is None:
            raise StorageError(f"set {set_id} does not exist")
        table = ITEMS[row.kind]
        size = s.scalar(select(func.count()).select_from(table).where(table.c.set_id == set_id))
    return int(size or 0), int(row.version)


def set_page(project: Project, set_id: int, *, offset: int = 0, limit: int = 100,
             sort: str = "item_id", descending: bool = False,
             total: int | None = None,
             where: dict[str, Any] | None = None) -> dict[str, Any]:
    """One page of a set's items in typed columns, sorted by one typed column.

    ``limit`` is capped at :data:`PAGE_LIMIT_MAX`; ``sort`` must be a typed column; ``where``
    keeps items whose typed columns equal the given values (``{"half": 1}``); ``total`` (the
    item count, e.g. remembered per set version; with ``where``, of the matching items) saves
    counting again. A page in the second half is read from the other end (a short offset on
    the reversed order).
    """
    with project.snapshot() as s:
        row = s.execute(select(tables.sets).where(_set.id == set_id)).first()
        if row is None:
            raise StorageError(f"set {set_id} does not exist")
        kind = row.kind
    table = ITEMS[kind]
    columns = typed_columns(table)
    if sort not in columns:
        raise ParamError(f"cannot sort by {sort!r}; sortable columns: {', '.join(columns)}")
    unknown = sorted(set(where or {}) - set(columns))
    if unknown:
        raise ParamError(f"cannot filter by {', '.join(map(repr, unknown))}; "
                         f"typed columns: {', '.join(columns)}")
    conditions = [table.c.set_id == set_id,
                  *(getattr(table.c, name) == value for name, value in (where or {}).items())]
    if total is None and where:
        with project.snapshot() as s:
            total = int(s.scalar(select(func.count()).select_from(table).where(*conditions))
                        or 0)
    elif total is None:
        total = set_size(project, set_id)[0]
    limit = max(1, min(int(limit), PAGE_LIMIT_MAX))
    offset = max(0, int(offset))
    reverse = offset > total // 2
    if reverse:  # the rows [offset, offset + limit) are [total - offset - limit, ...) reversed
        first = max(0, total - offset - limit)
        count = max(0, min(limit, total - offset))
    else:
        first, count = offset, limit
    down = descending != reverse
    key = getattr(table.c, sort)
    stmt = (select(*[getattr(table.c, c) for c in columns]).where(*conditions)
            .order_by(key.desc() if down else key.asc(),
                      table.c.item_id.desc() if down else table.c.item_id.asc())
            .offset(first).limit(count))
    with project.snapshot() as s:
        rows = [list(r) for r in s.execute(stmt)] if count else []
    if reverse:
        rows.reverse()
    return {"set": set_id, "columns": columns, "rows": rows, "offset": offset,
            "limit": limit, "total": total, "sort": sort, "descending": descending}


def set_item(project: Project, set_id: int, item_id: int) -> dict[str, Any]:
    """One item's typed columns (``kind`` added)."""
    info = set_info(project, set_id)
    table = ITEMS[info["kind"]]
    with project.snapshot() as s:
        row = s.execute(select(*[getattr(table.c, c) for c in info["columns"]]).where(
            table.c.set_id == set_id, table.c.item_id == item_id)).first()
    if row is None:
        raise StorageError(f"set {set_id} has no item {item_id} (it does not exist)")
    return {"kind": info["kind"], "version": info["version"], **dict(zip(info["columns"], row,
                                                                         strict=True))}


FILE_COLUMNS = {"particles": "image_path", "micrographs": "path", "volumes": "path"}


def set_files(project: Project, set_id: int, limit: int = 1000) -> list[str]:
    """The files a set refers to (stacks, micrographs, maps), sorted, at most ``limit``."""
    with project.snapshot() as s:
        kind = s.scalar(select(_set.kind).where(_set.id == set_id))
        column = FILE_COLUMNS.get(kind or "")
        if column is None:
            return []
        table = ITEMS[kind]
        rows = s.execute(select(table.c[column]).distinct().where(table.c.set_id == set_id)
                         .limit(limit)).scalars().all()
    return sorted(r for r in rows if r)


def compatible_outputs(project: Project, kind: str) -> list[dict[str, Any]]:
    """Output sets of kind ``kind`` (for an input picker): run, output, state, item count."""
    table = ITEMS.get(kind)
    if table is None:
        return []
    with project.snapshot() as s:
        rows = s.execute(select(_set.id, _set.run_id, _set.name, _set.state,
                                _run.label, _run.protocol, _run.status)
                         .join(tables.runs, _run.id == _set.run_id)
                         .where(_set.kind == kind).order_by(_set.id)).all()
        counts = dict(s.execute(select(table.c.set_id, func.count()).where(
            table.c.set_id.in_([r[0] for r in rows])).group_by(table.c.set_id)).all()) \
            if rows else {}
    return [{"set": sid, "run": rid, "output": name, "state": state, "label": label,
             "protocol_name": protocol.split(":")[-1], "status": status,
             "size": int(counts.get(sid, 0))}
            for sid, rid, name, state, label, protocol, status in rows]


def streaming_status(project: Project, window_s: float = 60.0) -> dict[str, Any]:
    """For the streaming monitor: unfinished runs and open sets with their item counts, items
    per minute over the last ``window_s`` (from the steps that published them), the time of
    the last published item, and failed items (``item_failed`` events) per run."""
    now = time.time()
    with project.snapshot() as s:
        runs = s.execute(select(_run.id, _run.label, _run.protocol, _run.status, _run.pid,
                                _run.host, _run.stop_requested).where(
            _run.status.in_(("running", "saved")))).all()
        sets = s.execute(select(_set.id, _set.run_id, _set.name, _set.kind,
                                _set.state).where(_set.state == "open")).all()
        recent = s.execute(select(_step.published).where(
            _step.status == "done", _step.finished_at > now - window_s)).all()
        last_step = dict(s.execute(select(_step.run_id, func.max(_step.finished_at))
                                   .where(_step.status == "done")
                                   .group_by(_step.run_id)).all())
        failed = dict(s.execute(select(_event.run_id, func.count()).where(
            _event.kind == "item_failed").group_by(_event.run_id)).all())  # one per item
        recent_seqs: dict[int, set[int]] = {}
        for (published,) in recent:
            for set_id, seq in (published or {}).values():
                recent_seqs.setdefault(set_id, set()).add(seq)
        out_sets = []
        for set_id, run_id, name, kind, state in sets:
            table = ITEMS[kind]
            size = s.scalar(select(func.count()).select_from(table).where(
                table.c.set_id == set_id)) or 0
            seqs = recent_seqs.get(set_id)
            fresh = s.scalar(select(func.count()).select_from(table).where(
                table.c.set_id == set_id, table.c.seq.in_(seqs))) if seqs else 0
            out_sets.append({"set": set_id, "run": run_id, "name": name, "kind": kind,
                             "state": state, "size": int(size),
                             "per_min": round(float(fresh or 0) * 60.0 / window_s, 1),
                             "last_item_at": iso_time(last_step.get(run_id))})
    run_rows = [{"id": r.id, "label": r.label, "protocol_name": r.protocol.split(":")[-1],
                 "status": r.status, "state": run_state(r),
                 "stop_requested": bool(r.stop_requested),
                 "last_item_at": iso_time(last_step.get(r.id)),
                 "failed_items": int(failed.get(r.id, 0))} for r in runs]
    return {"runs": run_rows, "sets": out_sets, "time": iso_time(now), "window_s": window_s}


_SORT_INDEXES: set[tuple[str, str, str]] = set()  # (database, table, column) known to exist


def ensure_sort_index(project: Project, set_id: int, column: str) -> str | None:
    """Create, once, the index that serves set pages sorted by ``column``: (set_id, column,
    item_id) on the set's item table, so a sorted page reads 100 index entries instead of
    sorting the whole set. ``CREATE INDEX IF NOT EXISTS`` (SQLite and PostgreSQL), so it
    works on projects made before it and by several GUIs at once. Returns the index name;
    None for ``item_id`` (the primary key), a column that is not typed (set_page refuses it)
    or a missing set. A database that refuses the index (read-only) leaves the page sorted
    without it.
    """
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError, ProgrammingError

    if column == "item_id":
        return None
    with project.snapshot() as s:
        row = s.execute(select(tables.sets).where(_set.id == set_id)).first()
        kind = row.kind if row is not None else None
    table = ITEMS.get(kind) if kind else None
    if table is None or column not in typed_columns(table):
        return None
    name = f"ix_{table.name}_sort_{column}"
    key = (project.db_url, table.name, column)
    if key in _SORT_INDEXES:
        return name
    quote = project.engine.dialect.identifier_preparer.quote
    statement = (f"CREATE INDEX IF NOT EXISTS {quote(name)} ON "
                 f"{quote(table.name)} (set_id, {quote(column)}, item_id)")
    try:
        with project.engine.begin() as conn:
            conn.execute(text(statement))
    except (OperationalError, ProgrammingError):
        return None  # e.g. a read-only database: the page is sorted without the index
    _SORT_INDEXES.add(key)
    return name
