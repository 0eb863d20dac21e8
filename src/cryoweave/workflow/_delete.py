"""Deleting a run: its row, steps, events, output sets and items (one transaction), then its
folder. A run whose runner process is alive is refused."""

from __future__ import annotations

import shutil

from sqlalchemy import delete

from cryoweave.errors import StorageError
from cryoweave.store import Project
from cryoweave.store.queries import process_gone
from cryoweave.store.schema import ITEM_TABLES, OpticsGroupRow, Run, SetRow


def delete_run(project: Project, run_ref: int | str) -> int:
    """Delete a run that is not running; returns its id."""
    run = project.get_run(run_ref)
    if run.status == "running" and not process_gone(run):
        raise StorageError(f"run {run.id} is running (pid {run.pid}); stop it first")
    with project.transaction() as s:
        set_ids = [sid for (sid,) in s.execute(
            SetRow.__table__.select().with_only_columns(SetRow.id).where(
                SetRow.run_id == run.id))]
        if set_ids:
            for table in ITEM_TABLES.values():
                s.execute(delete(table).where(table.set_id.in_(set_ids)))
            s.execute(delete(OpticsGroupRow).where(OpticsGroupRow.set_id.in_(set_ids)))
        s.execute(delete(Run).where(Run.id == run.id))  # steps, sets, events cascade
    folder = (project.root / run.folder).resolve()
    if run.folder and project.runs_dir.resolve() in folder.parents and folder.is_dir():
        shutil.rmtree(folder, ignore_errors=True)
    return run.id
