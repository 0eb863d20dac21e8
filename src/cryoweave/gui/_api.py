"""The JSON endpoints of the web GUI (``/api/...``).

State is read through :mod:`cryoweave.store.queries`, the report functions and the run
folders; runs are created by the same validation and creation code as ``run-protocol`` and
executed by ordinary runner processes (:mod:`cryoweave.gui._launch`).

A little over 400 lines on purpose: the route table at the end lists every endpoint, and the
handlers stay next to it so that the token and path rules can be checked in one module.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Route

from cryoweave.errors import CryoweaveError, InputError, ParamError, StorageError
from cryoweave.gui._checks import check_new_run, confined_paths, launch_options, problems_by_field
from cryoweave.gui._events import events
from cryoweave.gui._files import FileBrowser, PathRefused
from cryoweave.gui._launch import launch_runner
from cryoweave.gui._reports import protocol_report, run_report
from cryoweave.store import MAX_DB_INTEGER, Project, queries

LOG_TAIL_BYTES = 64_000
PICTURE_NAME = re.compile(r"^[A-Za-z0-9._-]+\.png$")


class GuiState:
    """What every endpoint needs: the project, the file browser, the launch options."""

    def __init__(self, project: Project, browser: FileBrowser, *, poll_interval_s: float = 1.0):
        self.project = project
        self.browser = browser
        self.poll_interval_s = poll_interval_s
        self._sizes: dict[int, tuple[int, int]] = {}  # set id -> (version, item count)

    def set_size(self, set_id: int) -> int | None:
        """The item count of a set, counted once per set version (a version changes with
        every publication, so a remembered count is never stale); None for a missing set."""
        version = queries.set_version(self.project, set_id)
        if version is None:
            return None
        known = self._sizes.get(set_id)
        if known is not None and known[0] == version:
            return known[1]
        try:
            size, version = queries.set_size(self.project, set_id)
        except StorageError:
            return None
        self._sizes[set_id] = (version, size)
        return size


def _state(request: Request) -> GuiState:
    return request.app.state.gui


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _int(value: Any, name: str, default: int | None = None) -> int:
    if value is None:
        if default is None:
            raise ParamError(f"{name} is required")
        return default
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise ParamError(f"{name} must be an integer, got {value!r}") from exc
    if abs(number) > MAX_DB_INTEGER:  # beyond the database's integers (no id is)
        raise ParamError(f"{name} must be an integer of at most {MAX_DB_INTEGER}, got {value!r}")
    return number


def handle_errors(func: Any) -> Any:
    """Turn the package's errors into JSON answers: 403 paths, 404 missing, 400 bad input."""

    def wrapper(request: Request) -> Any:
        try:
            return func(request)
        except PathRefused as exc:
            return error(403, str(exc))
        except ParamError as exc:
            return error(400, str(exc), problems=exc.problems)
        except StorageError as exc:
            text = str(exc)
            return error(404 if "no run" in text or "does not exist" in text else 409, text)
        except (InputError, CryoweaveError) as exc:
            return error(400, str(exc))

    wrapper.__name__ = func.__name__
    return wrapper


def _json_body(request: Request) -> Any:
    body = request.state.body if hasattr(request.state, "body") else None
    if body is None:
        raise ParamError("a JSON body is required")
    return body


def _run_id(request: Request) -> int:
    return _int(request.path_params["run_id"], "run id")


# -- project and runs ---------------------------------------------------------------------
@handle_errors
def project_info(request: Request) -> JSONResponse:
    from cryoweave.workflow import load_config

    st = _state(request)
    config = load_config(st.project.root).config
    return JSONResponse({"root": str(st.project.root), "name": st.project.root.name,
                         "queues": sorted(config.queues), "device": config.device,
                         "db": st.project.db_url if not st.project.is_sqlite else "sqlite",
                         "roots": [str(r) for r in st.browser.roots]})


@handle_errors
def runs_list(request: Request) -> JSONResponse:
    return JSONResponse({"runs": queries.list_runs(_state(request).project,
                                                   request.query_params.get("q"))})


@handle_errors
def runs_graph(request: Request) -> JSONResponse:
    project = _state(request).project
    return JSONResponse({"runs": queries.list_runs(project), "edges": queries.lineage(project)})


def _log_tail(path: Path, lines: int) -> list[str]:
    if not path.is_file():
        return []
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(max(0, size - LOG_TAIL_BYTES))
        text = handle.read().decode("utf-8", "replace")
    return text.splitlines()[-lines:]


@handle_errors
def run_detail(request: Request) -> JSONResponse:
    project = _state(request).project
    run_id = _run_id(request)
    report = run_report(project, run_id)
    folder = project.root / project.get_run(run_id).folder
    notes = folder / "notes.txt"
    report.update({
        "step_list": queries.run_steps(project, run_id),
        "events": queries.run_events(project, run_id, limit=50),
        "dependents": queries.dependents(project, run_id),
        "notes": notes.read_text() if notes.is_file() else "",
    })
    return JSONResponse(report)


@handle_errors
def run_log(request: Request) -> JSONResponse:
    project = _state(request).project
    run = project.get_run(_run_id(request))
    lines = max(1, min(_int(request.query_params.get("lines"), "lines", 200), 2000))
    folder = project.root / run.folder / "logs"
    return JSONResponse({"run": run.id,
                         "lines": _log_tail(folder / "run.log", lines),
                         "process": _log_tail(folder / "process.log", 20)})


# -- protocols and forms ------------------------------------------------------------------
@handle_errors
def protocols_list(request: Request) -> JSONResponse:
    from cryoweave.plugin import registry

    return JSONResponse({"protocols": [protocol_report(c) for c in registry().protocols()]})


@handle_errors
def protocol_form(request: Request) -> JSONResponse:
    from cryoweave.plugin import registry

    cls = registry().get(request.path_params["name"])
    project = _state(request).project
    return JSONResponse({
        "protocol": protocol_report(cls), "schema": cls.form_schema(),
        "choices": {name: queries.compatible_outputs(project, spec.kind)
                    for name, spec in cls.inputs().items()}})


@handle_errors
def validate_new_run(request: Request) -> JSONResponse:
    st = _state(request)
    _, _, _, problems = check_new_run(st.project, _json_body(request), st.browser)
    return JSONResponse({"ok": not problems, "problems": problems},
                        status_code=200 if not problems else 400)


@handle_errors
def create_new_run(request: Request) -> JSONResponse:
    from cryoweave.workflow import prepare_run

    st = _state(request)
    project = st.project
    body = _json_body(request)
    cls, options, label, problems = check_new_run(project, body, st.browser)
    if problems:
        return JSONResponse({"error": f"{len(problems)} problem(s)", "problems": problems},
                            status_code=400)
    try:
        created, run_id = prepare_run(project.root, cls, body.get("params", {}), label=label,
                                      base_dir=project.root, queue=options["queue"])
    except ParamError as exc:
        problems = problems_by_field(exc)
        return JSONResponse({"error": str(exc), "problems": problems}, status_code=400)
    created.close()
    run = project.get_run(run_id)
    pid = launch_runner(project.root, run_id, project.root / run.folder, **options)
    return JSONResponse({"run": run_id, "pid": pid}, status_code=201)


# -- run actions --------------------------------------------------------------------------
@handle_errors
def continue_run(request: Request) -> JSONResponse:
    project = _state(request).project
    run = project.get_run(_run_id(request))
    if run.status == "running" and not queries.process_gone(run):
        return error(409, f"run {run.id} is running (pid {run.pid})")
    body = request.state.body if isinstance(request.state.body, dict) else {}
    options, problems = launch_options({"queue": run.queue, **body}, project)
    if problems:
        return JSONResponse({"error": "bad launch options", "problems": problems},
                            status_code=400)
    pid = launch_runner(project.root, run.id, project.root / run.folder, **options)
    return JSONResponse({"run": run.id, "pid": pid}, status_code=202)


@handle_errors
def stop_run(request: Request) -> JSONResponse:
    from cryoweave.workflow import stop as request_stop

    run = request_stop(_state(request).project, _run_id(request))
    return JSONResponse({"run": run.id, "stop_requested": True}, status_code=202)


@handle_errors
def delete_run(request: Request) -> JSONResponse:
    from cryoweave.workflow import delete_run as delete

    project = _state(request).project
    run = project.get_run(_run_id(request))
    users = queries.dependents(project, run.id)
    if request.query_params.get("confirm") != "1":
        return error(409, f"deleting run {run.id} removes its folder and output sets; "
                          "confirm with ?confirm=1", dependents=users)
    delete(project, run.id)
    return JSONResponse({"deleted": run.id, "dependents": users})


@handle_errors
def save_notes(request: Request) -> JSONResponse:
    project = _state(request).project
    run = project.get_run(_run_id(request))
    body = _json_body(request)
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str) or len(text) > 100_000:
        raise ParamError('expected {"text": "..."} (at most 100,000 characters)')
    path = project.root / run.folder / "notes.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return JSONResponse({"run": run.id, "notes": text})


# -- sets and pictures --------------------------------------------------------------------
@handle_errors
def set_detail(request: Request) -> JSONResponse:
    return JSONResponse(queries.set_info(_state(request).project,
                                         _int(request.path_params["set_id"], "set id")))


@handle_errors
def set_items(request: Request) -> JSONResponse:
    q = request.query_params
    st = _state(request)
    set_id = _int(request.path_params["set_id"], "set id")
    offset = _int(q.get("offset"), "offset", 0)
    limit = _int(q.get("limit"), "limit", 100)
    sort = q.get("sort") or "item_id"
    queries.ensure_sort_index(st.project, set_id, sort)  # once per column: fast sorted pages
    page = queries.set_page(st.project, set_id, offset=offset, limit=limit, sort=sort,
                            descending=q.get("desc") in ("1", "true"), total=st.set_size(set_id))
    return JSONResponse(page)


def _picture_folder(project: Project, set_id: int) -> tuple[Path, dict[str, Any]]:
    info = queries.set_info(project, set_id)
    return project.cache_dir / "gui" / f"set{set_id}-v{info['version']}", info


def render_set_pictures(project: Project, set_id: int) -> list[str]:
    """The names of a set's pictures, rendered once per set version by the viewers (the
    pictures ``cryoweave view`` writes) into the project's cache."""
    from cryoweave.store import set_handle
    from cryoweave.viewers import view_set

    folder, info = _picture_folder(project, set_id)
    if not (folder / "index.html").is_file() and info["size"]:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".render-", dir=folder.parent))
        view_set(set_handle(project, set_id), tmp)
        try:
            tmp.rename(folder)  # complete pictures only (another request may have won)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return sorted(p.name for p in folder.glob("*.png")) if folder.is_dir() else []


def is_overview(name: str) -> bool:
    """A picture of the whole set (contact sheet, FSC, angular distribution…), not of one
    item (a micrograph's thumbnail or power spectrum)."""
    return not name.endswith(("_thumb.png", "_psd.png"))


@handle_errors
def set_pictures(request: Request) -> JSONResponse:
    set_id = _int(request.path_params["set_id"], "set id")
    return JSONResponse({"set": set_id,
                         "pictures": render_set_pictures(_state(request).project, set_id)})


@handle_errors
def run_pictures(request: Request) -> JSONResponse:
    """The results of a run: the overview pictures of each output set (FSC, resolution per
    iteration, angular distribution, map slices and projections, contact sheets…)."""
    project = _state(request).project
    run_id = _run_id(request)
    results = []
    for output in run_report(project, run_id)["output_sets"]:
        names = render_set_pictures(project, output["set"])
        results.append({"set": output["set"], "name": output["name"],
                        "kind": output["kind"], "state": output["state"],
                        "pictures": [n for n in names if is_overview(n)]})
    return JSONResponse({"run": run_id, "outputs": results})


@handle_errors
def set_picture(request: Request) -> Any:
    project = _state(request).project
    name = request.path_params["name"]
    if not PICTURE_NAME.match(name):
        raise PathRefused(f"{name!r} is not a picture name")
    folder, _ = _picture_folder(project, _int(request.path_params["set_id"], "set id"))
    path = folder / name
    if not path.is_file():
        return error(404, f"no picture {name!r} for this set (list them first)")
    return FileResponse(path, media_type="image/png")


@handle_errors
def item_image(request: Request) -> Any:
    """A thumbnail of one item (a row of the set table), rendered once by the viewers."""
    from cryoweave.viewers import item_thumbnail

    project = _state(request).project
    set_id = _int(request.path_params["set_id"], "set id")
    item_id = _int(request.path_params["item_id"], "item id")
    item = queries.set_item(project, set_id, item_id)
    path = project.cache_dir / "gui" / f"thumbs-set{set_id}-v{item['version']}" / \
        f"{item_id}.png"
    if not path.is_file():
        try:
            written = item_thumbnail(item["kind"], item, path)
        except (OSError, ValueError, CryoweaveError) as exc:
            return error(404, f"item {item_id}: no image ({exc})")
        if written is None:
            return error(404, f"items of a {item['kind']} set have no image")
    return FileResponse(path, media_type="image/png")


@handle_errors
def streaming(request: Request) -> JSONResponse:
    return JSONResponse(queries.streaming_status(_state(request).project))


# -- files and workflows --------------------------------------------------------------------
@handle_errors
def files(request: Request) -> JSONResponse:
    return JSONResponse(_state(request).browser.listing(request.query_params.get("path")))


@handle_errors
def load_workflow_file(request: Request) -> JSONResponse:
    from cryoweave.workflow import load_workflow, prepare_workflow

    project = _state(request).project
    body = _json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("text"), str):
        raise ParamError('expected {"text": WORKFLOW, "format": "json" | "yaml"}')
    suffix = ".yaml" if body.get("format") == "yaml" else ".json"
    scratch = project.cache_dir / "gui"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=suffix, dir=scratch, delete=False) as handle:
        handle.write(body["text"])
    try:
        entries = load_workflow(handle.name)
        refused = [f"{e.label}: {p['message']}" for e in entries
                   for p in _entry_paths(_state(request).browser, e)]
        if refused:
            raise ParamError(refused, context="workflow")
        created, run_ids = prepare_workflow(project.root, entries, base_dir=project.root)
    finally:
        Path(handle.name).unlink(missing_ok=True)
    created.close()
    if body.get("start", True):
        for run_id in run_ids:
            run = project.get_run(run_id)
            launch_runner(project.root, run_id, project.root / run.folder)
    return JSONResponse({"runs": run_ids}, status_code=201)


def _entry_paths(browser: FileBrowser, entry: Any) -> list[dict[str, Any]]:
    from cryoweave.plugin import registry

    try:
        cls = registry().get(entry.protocol)
    except CryoweaveError:
        return []  # reported by the workflow's own validation
    return confined_paths(browser, cls, entry.params)


@handle_errors
def export_workflow(request: Request) -> JSONResponse:
    project = _state(request).project
    runs = project.list_runs()
    labels = {run.id: run.label or f"run-{run.id}" for run in runs}
    sources = {(e["to"], e["input"]): (e["from"], e["output"]) for e in queries.lineage(project)}
    entries = []
    for run in runs:
        params = {}
        for name, value in (run.params or {}).items():
            if (run.id, name) in sources:
                source, output = sources[(run.id, name)]
                value = {"run": labels[source], "output": output}
            params[name] = value
        entry = {"label": labels[run.id], "protocol": run.protocol, "params": params}
        if run.queue:
            entry["queue"] = run.queue
        entries.append(entry)
    return JSONResponse({"name": project.root.name, "protocols": entries},
                        headers={"content-disposition": 'attachment; filename="workflow.json"'})


def _with_body(func: Any) -> Any:
    """Read the JSON body (async) before the synchronous handler runs in a thread."""
    from starlette.concurrency import run_in_threadpool

    async def endpoint(request: Request) -> Any:
        raw = await request.body()
        if raw:
            try:
                request.state.body = json.loads(raw)
            except json.JSONDecodeError as exc:
                return error(400, f"the body is not valid JSON ({exc.msg})")
        else:
            request.state.body = None
        return await run_in_threadpool(func, request)

    endpoint.__name__ = func.__name__
    return endpoint


ROUTES = [
    Route("/api/project", project_info),
    Route("/api/runs", runs_list, methods=["GET"]),
    Route("/api/runs", _with_body(create_new_run), methods=["POST"]),
    Route("/api/validate", _with_body(validate_new_run), methods=["POST"]),
    Route("/api/graph", runs_graph),
    Route("/api/runs/{run_id}", run_detail, methods=["GET"]),
    Route("/api/runs/{run_id}", _with_body(delete_run), methods=["DELETE"]),
    Route("/api/runs/{run_id}/log", run_log),
    Route("/api/runs/{run_id}/pictures", run_pictures),
    Route("/api/runs/{run_id}/continue", _with_body(continue_run), methods=["POST"]),
    Route("/api/runs/{run_id}/stop", _with_body(stop_run), methods=["POST"]),
    Route("/api/runs/{run_id}/notes", _with_body(save_notes), methods=["POST"]),
    Route("/api/protocols", protocols_list),
    Route("/api/protocols/{name}", protocol_form),
    Route("/api/sets/{set_id}", set_detail),
    Route("/api/sets/{set_id}/items", set_items),
    Route("/api/sets/{set_id}/pictures", set_pictures),
    Route("/api/sets/{set_id}/pictures/{name}", set_picture),
    Route("/api/sets/{set_id}/items/{item_id}/image.png", item_image),
    Route("/api/streaming", streaming),
    Route("/api/files", files),
    Route("/api/workflows", _with_body(load_workflow_file), methods=["POST"]),
    Route("/api/workflow", export_workflow),
    Route("/api/events", events),
]
