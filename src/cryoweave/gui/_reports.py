"""The JSON objects of runs and protocols: the CLI's ``--json`` reports (same keys), plus what
only the GUI shows (the process-gone flag, output set ids, the palette category)."""

from __future__ import annotations

from typing import Any

from cryoweave.store import Project, queries
from cryoweave.workflow import protocol_dict, run_dict


def run_report(project: Project, run_id: int) -> dict[str, Any]:
    run = project.get_run(run_id)
    report = run_dict(project, run, files=False)
    row = next(r for r in queries.list_runs(project) if r["id"] == run.id)
    report["process_gone"] = row["process_gone"]
    report["output_sets"] = row["outputs"]
    return report


def protocol_report(cls: Any) -> dict[str, Any]:
    return {**protocol_dict(cls), "category": protocol_category(cls)}


def protocol_category(cls: Any) -> str:
    """The palette group: the declared ``category``, else from the name and outputs."""
    declared = getattr(cls, "category", None)
    if isinstance(declared, str) and declared:
        return declared
    if cls.__name__.startswith("Import"):
        return "import"
    kinds = [t.kind for t in cls.outputs().values()]
    return kinds[0] if kinds else "other"
