"""``cryoweave workflow run``: start a workflow's runs together and show their status."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from cryoweave.store import Project, queries


def status_table(project: Project, run_ids: list[int]) -> Table:
    table = Table("run", "label", "protocol", "status", "steps", "outputs")
    for run in queries.list_runs(project, run_ids=run_ids, sizes=True):
        steps = run["steps"]
        outputs = [f"{o['name']}: {o['size']} ({o['state']})" for o in run["outputs"]]
        table.add_row(str(run["id"]), run["label"] or "", run["protocol_name"],
                      run["status"], f"{steps.get('done', 0)}/{sum(steps.values())}",
                      ", ".join(outputs))
    return table


def launch(project: Project, run_ids: list[int], *, workers: int | None, device: str,
           console: Console, refresh_s: float = 0.5) -> dict[int, int]:
    """Run each run in its own process (``run-protocol --continue ID``); returns exit codes."""
    processes: dict[int, subprocess.Popen] = {}
    logs = []
    for run_id in run_ids:
        run = project.get_run(run_id)
        log_path = project.root / run.folder / "logs" / "process.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "a")  # noqa: SIM115 - closed below, after the process ends
        logs.append(log)
        command = [sys.executable, "-m", "cryoweave.cli", "run-protocol", "--continue",
                   str(run_id), "--project", str(project.root), "--quiet", "--device", device]
        if workers is not None:  # else the protocol's choice, as run-protocol makes it
            command += ["--workers", str(workers)]
        processes[run_id] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        with Live(status_table(project, run_ids), console=console, auto_refresh=False) as live:
            while any(p.poll() is None for p in processes.values()):
                time.sleep(refresh_s)
                live.update(status_table(project, run_ids), refresh=True)
            live.update(status_table(project, run_ids), refresh=True)
    except KeyboardInterrupt:
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
        for process in processes.values():
            process.wait()
        raise
    finally:
        for log in logs:
            log.close()
    return {run_id: p.returncode for run_id, p in processes.items()}


def run_workflow_file(path: str, project_dir: str, *, db_url: str | None, resume: bool,
                      workers: int | None, device: str, console: Console) -> dict[str, Any]:
    """Create and launch the runs of a workflow file; relative paths in it are taken from
    the file's folder. Returns ``state`` (finished, failed or interrupted — after Ctrl-C or
    SIGTERM, when the runs were stopped), ``runs`` (label → run id), ``status`` (label →
    run status), ``exit_codes`` (run id → exit code, ``null`` when stopped) and ``details``
    (label → run object, see :mod:`cryoweave.workflow._report`)."""
    from cryoweave.workflow import failed_items, load_workflow, prepare_workflow, run_dict

    entries = load_workflow(path)
    project, run_ids = prepare_workflow(Path(project_dir), entries, resume=resume,
                                        db_url=db_url, base_dir=Path(path).resolve().parent)
    interrupted = False
    try:
        codes: dict[int, int | None] = dict(
            launch(project, run_ids, workers=workers, device=device, console=console))
    except KeyboardInterrupt:
        interrupted = True
        codes = {rid: None for rid in run_ids}
    labels = [e.label for e in entries]
    runs = {label: project.get_run(rid) for label, rid in zip(labels, run_ids, strict=True)}
    statuses = {label: run.status for label, run in runs.items()}
    state = "interrupted" if interrupted else (
        "finished" if all(v == "finished" for v in statuses.values()) else "failed")
    return {"state": state, "runs": dict(zip(labels, run_ids, strict=True)),
            "status": statuses, "exit_codes": codes,
            "failed_items": {label: failed_items(project, run.id)[0]
                             for label, run in runs.items()},
            "details": {label: run_dict(project, run, files=False)
                        for label, run in runs.items()}}
