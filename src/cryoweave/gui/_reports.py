"""The JSON objects of runs and protocols, shared with the CLI's ``--json``.

Uses :func:`cryoweave.workflow.run_dict` and :func:`~cryoweave.workflow.protocol_dict` when
they exist (same keys as the CLI); otherwise a minimal equivalent with the same keys.
"""

from __future__ import annotations

from typing import Any

from cryoweave.workflow import Project, queries

try:  # the shared report functions (landing with Protocol.summary)
    from cryoweave.workflow import protocol_dict as _protocol_dict
    from cryoweave.workflow import run_dict as _run_dict
except ImportError:  # pragma: no cover - older workflow package
    _protocol_dict = None
    _run_dict = None


def run_report(project: Project, run_id: int) -> dict[str, Any]:
    run = project.get_run(run_id)
    if _run_dict is not None:
        report = _run_dict(project, run, files=False)
    else:
        params = dict(run.params or {})
        report = {"id": run.id, "label": run.label, "protocol": run.protocol,
                  "protocol_name": run.protocol.split(":")[-1], "status": run.status,
                  "error": run.error, "folder": str(project.root / run.folder),
                  "params": params,
                  "inputs": {n: v for n, v in params.items()
                             if isinstance(v, dict) and "set" in v},
                  "summary": {}}
    row = next(r for r in queries.list_runs(project) if r["id"] == run.id)
    report["state"] = row["state"]
    report["process_gone"] = row["process_gone"]
    report["steps"] = row["steps"]
    report["output_sets"] = row["outputs"]
    return report


def protocol_report(cls: Any) -> dict[str, Any]:
    if _protocol_dict is not None:
        report = _protocol_dict(cls)
    else:
        report = {"name": cls.__name__, "identity": cls.identity(), "plugin": cls.plugin,
                  "label": cls.label,
                  "inputs": {n: s.kind for n, s in cls.inputs().items()},
                  "outputs": {n: t.kind for n, t in cls.outputs().items()},
                  "help": cls.help()}
    report["category"] = protocol_category(cls)
    return report


def protocol_category(cls: Any) -> str:
    """The palette group: the declared ``category``, else from the name and outputs."""
    declared = getattr(cls, "category", None)
    if isinstance(declared, str) and declared:
        return declared
    if cls.__name__.startswith("Import"):
        return "import"
    kinds = [t.kind for t in cls.outputs().values()]
    return kinds[0] if kinds else "other"
