"""The GUI's JSON API through an ASGI test client: every endpoint, the token and path rules."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time

import httpx
import pytest
from starlette.testclient import TestClient

from conftest import REPO_ROOT
from cryoweave.gui import create_app
from cryoweave.store import Project
from cryoweave.workflow import stop
from gui.conftest import HEADERS, TOKEN, make_project, wait_for_run

GET_ENDPOINTS = [
    "/", "/static/app.js", "/api/project", "/api/runs", "/api/graph", "/api/runs/1",
    "/api/runs/1/log", "/api/runs/1/pictures", "/api/protocols", "/api/protocols/Downsample",
    "/api/sets/1",
    "/api/sets/1/items", "/api/sets/1/items/1/image.png", "/api/sets/1/pictures",
    "/api/sets/1/pictures/x.png",
    "/api/streaming", "/api/files", "/api/workflow", "/api/events?max_s=0",
]
MUTATING_ENDPOINTS = [
    ("POST", "/api/runs"), ("POST", "/api/validate"), ("DELETE", "/api/runs/1"),
    ("POST", "/api/runs/1/continue"), ("POST", "/api/runs/1/stop"),
    ("POST", "/api/runs/1/notes"), ("POST", "/api/workflows"),
]


def _run(client: TestClient, label: str) -> dict:
    return next(r for r in client.get("/api/runs").json()["runs"] if r["label"] == label)


# -- token and cross-site rules -------------------------------------------------------------
@pytest.mark.parametrize("method,path", [("GET", p) for p in GET_ENDPOINTS] + MUTATING_ENDPOINTS)
def test_every_endpoint_refuses_requests_without_the_token(gui_project, method, path):
    app = create_app(gui_project, token=TOKEN)
    with TestClient(app) as anonymous:
        for headers in ({}, {"X-Cryoweave-Token": "wrong-token-wrong-token"},
                        {"Authorization": "Bearer nope"}, {"Cookie": "cryoweave_token=nope"}):
            response = anonymous.request(method, path, headers={"X-Cryoweave-Request": "1",
                                                                **headers})
            assert response.status_code == 401, (method, path, headers)
            assert "token" in response.json()["error"]
    app.state.gui.project.close()


def test_the_token_is_accepted_in_a_header_the_query_a_bearer_or_the_page_cookie(gui_project):
    app = create_app(gui_project, token=TOKEN)
    with TestClient(app) as c:
        assert c.get("/api/project", headers={"X-Cryoweave-Token": TOKEN}).status_code == 200
        assert c.get("/api/project", headers={"Authorization": f"Bearer {TOKEN}"}).status_code \
            == 200
        page = c.get(f"/?token={TOKEN}")
        assert page.status_code == 200
        cookie = page.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert c.get("/api/project").status_code == 200  # the cookie the page set
        headers = c.get("/static/app.js").headers
        assert "script-src" not in headers["content-security-policy"]  # default-src 'self'
        assert "default-src 'self'" in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "no-referrer"
    app.state.gui.project.close()


def test_mutations_need_the_custom_header_and_a_same_origin(client):
    plain = {"X-Cryoweave-Token": TOKEN, "X-Cryoweave-Request": ""}
    for method, path in MUTATING_ENDPOINTS:
        assert client.request(method, path, headers=plain).status_code == 403, path
        foreign = {**HEADERS, "Origin": "http://evil.example"}
        assert client.request(method, path, headers=foreign).status_code == 403, path
        cross = {**HEADERS, "Sec-Fetch-Site": "cross-site"}
        assert client.request(method, path, headers=cross).status_code == 403, path
    same = {**HEADERS, "Origin": "http://testserver"}
    response = client.post("/api/runs/1/notes", headers=same, json={"text": "same origin"})
    assert response.status_code == 200
    # reading needs no custom header (a plain link or image)
    assert client.get("/api/runs", headers=plain).status_code == 200


# -- file browser --------------------------------------------------------------------------
def test_files_are_confined_to_the_project_and_the_data_roots(client, gui_project, tmp_path):
    listing = client.get("/api/files").json()
    assert listing["path"] == str(gui_project.resolve())
    assert {"Runs", "project.sqlite"} <= {e["name"] for e in listing["entries"]}
    data = gui_project.parent / "data"
    assert "particles.star" in {e["name"] for e in
                                client.get("/api/files", params={"path": str(data)})
                                .json()["entries"]}
    assert client.get("/api/files", params={"path": "Runs"}).status_code == 200
    for bad in ("../../etc/passwd", "../data", "Runs/../../data", "/etc", "/etc/passwd",
                str(tmp_path), "a\x00b"):
        response = client.get("/api/files", params={"path": bad})
        assert response.status_code == 403, bad
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "key.txt").write_text("secret")
    link = gui_project / "link-out"
    link.symlink_to(outside)
    try:
        assert client.get("/api/files", params={"path": "link-out"}).status_code == 403
        assert client.get("/api/files", params={"path": str(link)}).status_code == 403
        names = {e["name"] for e in client.get("/api/files").json()["entries"]}
        assert "link-out" not in names
    finally:
        link.unlink()


# -- runs, graph, run page -------------------------------------------------------------------
def test_runs_list_search_and_lineage_graph(client):
    runs = client.get("/api/runs").json()["runs"]
    assert [r["label"] for r in runs] == ["small:particles", "small"]
    assert all(r["status"] == "finished" for r in runs)
    importer, small = runs
    assert small["outputs"][0]["name"] == "particles"
    assert [r["label"] for r in client.get("/api/runs", params={"q": "DOWNSAMPLE"})
            .json()["runs"]] == ["small"]
    assert client.get("/api/runs", params={"q": "nothing-like-this"}).json()["runs"] == []
    graph = client.get("/api/graph").json()
    assert graph["edges"] == [{"from": importer["id"], "output": "particles", "to": small["id"],
                               "input": "particles", "set": importer["outputs"][0]["set"]}]


def test_run_page_has_status_steps_summary_params_outputs_and_log(client):
    small = _run(client, "small")
    run = client.get(f"/api/runs/{small['id']}").json()
    assert run["status"] == "finished" and run["state"] == "finished"
    assert run["params"]["box_px"] == 32
    assert run["inputs"]["particles"]["set"] == _run(client, "small:particles")["outputs"][0]["set"]
    assert run["steps"].get("done", 0) >= 1 and run["step_list"]
    assert run["output_sets"][0]["kind"] == "particles"
    assert run["dependents"] == []
    assert any(e["kind"] == "run_finished" for e in run["events"])
    log = client.get(f"/api/runs/{small['id']}/log", params={"lines": 5}).json()
    assert 1 <= len(log["lines"]) <= 5
    assert client.get("/api/runs/999").status_code == 404
    assert client.get("/api/runs/abc").status_code == 400
    for path in (f"/api/runs/{2**70}", f"/api/sets/{2**70}",
                 f"/api/sets/1/items/{2**70}/image.png"):
        response = client.get(path)  # beyond the database's integers: refused, not a crash
        assert response.status_code == 400 and "at most 2147483647" in response.text
    assert client.get("/api/sets/1/items", params={"offset": 2**70}).status_code == 400


def test_notes_are_saved_in_the_run_folder(client, gui_project):
    small = _run(client, "small")
    response = client.post(f"/api/runs/{small['id']}/notes", json={"text": "good box"})
    assert response.status_code == 200
    assert client.get(f"/api/runs/{small['id']}").json()["notes"] == "good box"
    assert (gui_project / "Runs" / f"{small['id']:06d}_Downsample" / "notes.txt").read_text() \
        == "good box"
    assert client.post(f"/api/runs/{small['id']}/notes", json={"x": 1}).status_code == 400


# -- sets: pages, sorting, pictures ---------------------------------------------------------
def test_set_pages_are_sorted_by_typed_columns_and_capped(client):
    set_id = _run(client, "small")["outputs"][0]["set"]
    info = client.get(f"/api/sets/{set_id}").json()
    assert info["size"] == 60 and "defocus_u_a" in info["columns"]
    page = client.get(f"/api/sets/{set_id}/items",
                      params={"offset": 10, "limit": 20, "sort": "defocus_u_a", "desc": 1}).json()
    column = page["columns"].index("defocus_u_a")
    values = [row[column] for row in page["rows"]]
    assert len(values) == 20 and values == sorted(values, reverse=True)
    everything = client.get(f"/api/sets/{set_id}/items",
                            params={"limit": 1000, "sort": "defocus_u_a"}).json()
    assert values == sorted((r[column] for r in everything["rows"]), reverse=True)[10:30]
    huge = client.get(f"/api/sets/{set_id}/items", params={"limit": 10**9}).json()
    assert huge["limit"] == 500
    assert client.get(f"/api/sets/{set_id}/items", params={"offset": -5}).json()["offset"] == 0
    bad = client.get(f"/api/sets/{set_id}/items", params={"sort": "extra; drop table runs"})
    assert bad.status_code == 400 and "sortable columns" in bad.json()["error"]
    assert client.get(f"/api/sets/{set_id}/items", params={"limit": "x"}).status_code == 400
    assert client.get("/api/sets/9999").status_code == 404


def test_set_pictures_come_from_the_viewers(client):
    set_id = _run(client, "small")["outputs"][0]["set"]
    pictures = client.get(f"/api/sets/{set_id}/pictures").json()["pictures"]
    # simulated particles have poses: their angular distribution comes with the gallery
    assert pictures == ["small_particles_angular_distribution.png", "small_particles_gallery.png"]
    image = client.get(f"/api/sets/{set_id}/pictures/{pictures[0]}")
    assert image.status_code == 200 and image.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get(f"/api/sets/{set_id}/pictures/..%2Fx.png").status_code in (403, 404)
    assert client.get(f"/api/sets/{set_id}/pictures/index.html").status_code == 403
    assert client.get(f"/api/sets/{set_id}/pictures/missing.png").status_code == 404
    thumb = client.get(f"/api/sets/{set_id}/items/7/image.png")
    assert thumb.status_code == 200 and thumb.content[:4] == b"\x89PNG"
    assert client.get(f"/api/sets/{set_id}/items/999/image.png").status_code == 404


# -- protocols, forms, validation, launching --------------------------------------------------
def test_protocol_palette_and_form_with_compatible_outputs(client):
    protocols = client.get("/api/protocols").json()["protocols"]
    names = {p["name"]: p for p in protocols}
    assert names["ImportMicrographs"]["category"] == "import"
    assert names["Downsample"]["plugin"] == "cryoweave"
    form = client.get("/api/protocols/Downsample").json()
    assert form["schema"]["properties"]["box_px"]["unit"] == "px"
    choices = form["choices"]["particles"]
    assert {c["label"] for c in choices} == {"small:particles", "small"}
    assert all(c["size"] == 60 and c["state"] == "closed" for c in choices)
    assert client.get("/api/protocols/NoSuchProtocol").status_code == 400


def test_validation_reports_every_problem_by_field_and_creates_nothing(client, gui_project):
    before = client.get("/api/runs").json()["runs"]
    body = {"protocol": "Downsample", "label": "small", "workers": 0, "executor": "rockets",
            "params": {"particles": {"run": 99, "output": "x"}, "box_px": 33, "colour": 1}}
    for path in ("/api/validate", "/api/runs"):
        response = client.post(path, json=body)
        assert response.status_code == 400
        fields = {p["field"] for p in response.json()["problems"]}
        assert {"particles", "box_px", "colour", "_label", "_workers", "_executor"} <= fields
    assert client.get("/api/runs").json()["runs"] == before
    assert len(list((gui_project / "Runs").iterdir())) == len(before)
    assert client.post("/api/runs", content=b"{not json").status_code == 400
    ok = client.post("/api/validate", json={"protocol": "Downsample",
                                            "params": {"particles": {"run": "small",
                                                                     "output": "particles"},
                                                       "box_px": 24}})
    assert ok.status_code == 200 and ok.json() == {"ok": True, "problems": []}


def test_file_inputs_outside_the_allowed_folders_are_refused(client, gui_project):
    data = gui_project.parent / "data"
    for protocol, params, field in [
            ("Downsample", {"particles": "/etc/passwd", "box_px": 24}, "particles"),
            ("Downsample", {"particles": "../data/particles.star"}, "particles"),
            ("ImportMicrographs", {"pattern": "/etc/*.mrc"}, "pattern"),
            ("ImportParticles", {"path": "/etc/passwd"}, "path"),
            ("SimulateParticles", {"phantom": True, "poses_star": "/etc/x.star"}, "poses_star")]:
        response = client.post("/api/validate", json={"protocol": protocol, "params": params})
        assert response.status_code == 400
        problems = response.json()["problems"]
        assert [p["field"] for p in problems] == [field], problems
        assert "outside the allowed folders" in problems[0]["message"] or \
            "'..' is not allowed" in problems[0]["message"]
    inside = client.post("/api/validate", json={"protocol": "Downsample", "params": {
        "particles": str(data / "particles.star"), "box_px": 24}})
    assert inside.status_code == 200, inside.text
    workflow = {"protocols": [{"label": "etc", "protocol": "ImportMicrographs",
                               "params": {"pattern": "/etc/*.mrc"}}]}
    refused = client.post("/api/workflows", json={"text": json.dumps(workflow)})
    assert refused.status_code == 400 and "outside the allowed folders" in refused.text
    assert "etc" not in [r["label"] for r in client.get("/api/runs").json()["runs"]]


def test_launch_continue_stop_copy_and_delete(tmp_path):
    project_dir = make_project(tmp_path)
    app = create_app(project_dir, token=TOKEN)
    with TestClient(app, headers=HEADERS) as client:
        response = client.post("/api/runs", json={
            "protocol": "Downsample", "label": "tiny", "workers": 1, "executor": "threads",
            "device": "cpu", "params": {"particles": {"run": "small", "output": "particles"},
                                        "box_px": 16}})
        assert response.status_code == 201, response.text
        run_id = response.json()["run"]
        assert wait_for_run(project_dir, run_id) == "finished"
        run = client.get(f"/api/runs/{run_id}").json()
        assert run["label"] == "tiny" and run["summary"]["box_px"] == 16  # Protocol.summary()
        assert (project_dir / "Runs" / f"{run_id:06d}_Downsample" / "logs" / "process.log") \
            .is_file()
        # the runner process is the ordinary command line one
        assert client.post(f"/api/runs/{run_id}/stop").status_code == 202
        assert client.post(f"/api/runs/{run_id}/continue").status_code == 202
        assert wait_for_run(project_dir, run_id) == "finished"
        small = _run(client, "small")
        refused = client.delete(f"/api/runs/{small['id']}")
        assert refused.status_code == 409 and refused.json()["dependents"] == [run_id]
        folder = project_dir / small["folder"]
        assert folder.is_dir()
        deleted = client.delete(f"/api/runs/{small['id']}", params={"confirm": 1})
        assert deleted.json() == {"deleted": small["id"], "dependents": [run_id]}
        assert not folder.exists()
        assert "small" not in [r["label"] for r in client.get("/api/runs").json()["runs"]]
        assert client.get(f"/api/sets/{small['outputs'][0]['set']}").status_code == 404
        assert client.delete("/api/runs/999", params={"confirm": 1}).status_code == 404
    app.state.gui.project.close()


def test_continue_refuses_a_live_run_and_delete_refuses_it_too(tmp_path):
    project_dir = make_project(tmp_path)
    with Project.open(project_dir) as project, project.transaction() as s:
        from cryoweave.store.schema import Run

        run = s.get(Run, 2)
        run.status, run.pid = "running", os.getpid()  # this test process: alive
    app = create_app(project_dir, token=TOKEN)
    with TestClient(app, headers=HEADERS) as client:
        assert client.post("/api/runs/2/continue").status_code == 409
        assert client.delete("/api/runs/2", params={"confirm": 1}).status_code == 409
    app.state.gui.project.close()


# -- streaming, workflows, events -----------------------------------------------------------
def test_streaming_status(client):
    status = client.get("/api/streaming").json()
    assert status["runs"] == [] and status["sets"] == []  # everything is finished


def test_workflow_export_and_load(tmp_path):
    project_dir = make_project(tmp_path)
    app = create_app(project_dir, token=TOKEN)
    with TestClient(app, headers=HEADERS) as client:
        exported = client.get("/api/workflow").json()
        entries = {e["label"]: e for e in exported["protocols"]}
        assert entries["small"]["params"]["particles"] == {"run": "small:particles",
                                                           "output": "particles"}
        workflow = {"protocols": [{"label": "wf-down", "protocol": "Downsample", "params": {
            "particles": {"run": "small", "output": "particles"}, "box_px": 24}}]}
        response = client.post("/api/workflows", json={"text": json.dumps(workflow)})
        assert response.status_code == 201, response.text
        (run_id,) = response.json()["runs"]
        assert wait_for_run(project_dir, run_id) == "finished"
        saved = client.post("/api/workflows", json={"text": json.dumps(
            {"protocols": [{**workflow["protocols"][0], "label": "later"}]}), "start": False})
        (later,) = saved.json()["runs"]
        assert client.get(f"/api/runs/{later}").json()["status"] == "saved"
        assert client.post(f"/api/runs/{later}/continue").status_code == 202
        assert wait_for_run(project_dir, later) == "finished"
        bad = client.post("/api/workflows", json={"text": '{"protocols": [{"label": 1}]}'})
        assert bad.status_code == 400
        yaml_bad = client.post("/api/workflows", json={"text": "protocols: [", "format": "yaml"})
        assert yaml_bad.status_code == 400
    app.state.gui.project.close()


def test_event_stream_sends_the_change_marker(client):
    with client.stream("GET", "/api/events", params={"max_s": 0.2}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    assert "event: change" in text
    marker = json.loads(re.search(r"data: (.*)", text).group(1))
    assert marker["runs"] == 2 and marker["gone"] == []


# -- the command ----------------------------------------------------------------------------
def test_gui_command_prints_a_token_url_and_serves(gui_project):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(
        [sys.executable, "-m", "cryoweave.cli", "gui", "--project", str(gui_project),
         "--no-browser", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env=env)
    try:
        line = process.stdout.readline()
        url = re.search(r"(http://127\.0\.0\.1:\d+)/\?token=(\S+)", line)
        assert url, line
        base, token = url.groups()
        deadline = time.monotonic() + 20
        while True:
            try:
                assert httpx.get(f"{base}/api/project").status_code == 401
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        ok = httpx.get(f"{base}/api/project", headers={"X-Cryoweave-Token": token})
        assert ok.status_code == 200 and ok.json()["root"] == str(gui_project.resolve())
    finally:
        process.terminate()
        process.wait(10)
    assert process.returncode == 0
    assert "stopped" in process.stdout.read()


def test_gui_command_refuses_a_short_token(run_cli, gui_project):
    result = run_cli("gui", "--project", str(gui_project), "--no-browser", "--token", "short")
    assert result.returncode == 2 and "at least 16 characters" in result.stderr


def test_security_helpers():
    from cryoweave.gui._security import is_loopback, new_token

    assert is_loopback("127.0.0.1") and is_loopback("::1") and not is_loopback("0.0.0.0")
    assert len(new_token()) >= 24 and new_token() != new_token()


def test_runs_launched_from_the_gui_survive_a_gui_restart(tmp_path):
    from conftest import subprocess_env

    project_dir = make_project(tmp_path)
    env = subprocess_env()  # the toy protocols, for a slow run
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "src"), env["PYTHONPATH"]])

    def start() -> tuple[subprocess.Popen, str, dict[str, str]]:
        process = subprocess.Popen(
            [sys.executable, "-m", "cryoweave.cli", "gui", "--project", str(project_dir),
             "--no-browser"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=env)
        base, token = re.search(r"(http://\S+)/\?token=(\S+)", process.stdout.readline()).groups()
        return process, base, {"X-Cryoweave-Token": token, "X-Cryoweave-Request": "1"}

    server, base, headers = start()
    try:
        response = httpx.post(f"{base}/api/runs", headers=headers, timeout=60, json={
            "protocol": "ToySteps", "label": "slow",
            "params": {"n_steps": 12, "sleep_s": 0.25, "chain": True}})
        assert response.status_code == 201, response.text
        run_id, pid = response.json()["run"], response.json()["pid"]
    finally:
        server.terminate()
        server.wait(10)
    assert server.returncode == 0
    os.kill(pid, 0)  # the runner goes on without the GUI
    server, base, headers = start()
    try:
        assert wait_for_run(project_dir, run_id) == "finished"
        run = httpx.get(f"{base}/api/runs/{run_id}", headers=headers, timeout=60).json()
        assert run["status"] == "finished" and run["steps"] == {"done": 12}
    finally:
        server.terminate()
        server.wait(10)


def test_event_stream_wakes_listeners_on_a_change(tmp_path):
    project_dir = make_project(tmp_path)
    app = create_app(project_dir, token=TOKEN, poll_interval_s=0.05)

    def change_soon() -> None:
        time.sleep(0.5)
        with Project.open(project_dir) as project:
            stop(project, 2)  # a new event

    with TestClient(app, headers=HEADERS) as client:
        thread = threading.Thread(target=change_soon)
        thread.start()
        with client.stream("GET", "/api/events", params={"max_s": 3}) as response:
            text = "".join(response.iter_text())
        thread.join()
    markers = [json.loads(m) for m in re.findall(r"event: change\ndata: (.*)", text)]
    assert len(markers) == 2 and markers[1]["event"] == markers[0]["event"] + 1
    assert app.state.watcher.listeners == 0
    app.state.gui.project.close()


# -- results of a refinement: FSC, resolution per iteration, angular distribution, map ------
@pytest.fixture(scope="module")
def refined_project(tmp_path_factory):
    """A 2-iteration ReconstructHighRes run (local alignment) on 40 simulated particles."""
    from cryoweave.plugin import registry
    from cryoweave.workflow._submit import run_protocol

    root = tmp_path_factory.mktemp("refined") / "project"
    project, simulation = run_protocol(root, registry().get("SimulateParticles"), {
        "phantom": True, "n_particles": 40, "box_px": 24, "pixel_size_a": 3.0, "snr": 1.0,
        "defocus_range_a": [10000, 20000], "seed": 3}, label="sim")
    assert simulation.status == "finished", simulation.error
    project.close()
    project, refined = run_protocol(root, registry().get("ReconstructHighRes"), {
        "particles": {"run": "sim", "output": "particles"}, "alignment": "local",
        "iterations": 2, "max_target_resolution_a": "15"}, label="refine")
    assert refined.status == "finished", refined.error
    project.close()
    return root, refined.run_id


def test_a_refinement_run_shows_its_results_pictures(refined_project):
    root, run_id = refined_project
    app = create_app(root, token=TOKEN, poll_interval_s=0.05)
    with TestClient(app, headers=HEADERS) as client:
        results = client.get(f"/api/runs/{run_id}/pictures").json()
        by_output = {o["name"]: o for o in results["outputs"]}
        assert sorted(by_output) == ["fsc", "particles", "volume"]
        assert by_output["fsc"]["pictures"] == ["refine_fsc.png",
                                                "refine_fsc_resolution_per_iteration.png"]
        assert "refine_particles_angular_distribution.png" in by_output["particles"]["pictures"]
        assert {"refine_volume_slices.png", "refine_volume_projections.png"} <= \
            set(by_output["volume"]["pictures"])
        for output in by_output.values():
            for name in output["pictures"]:
                image = client.get(f"/api/sets/{output['set']}/pictures/{name}")
                assert image.status_code == 200, name
                assert image.content[:8] == b"\x89PNG\r\n\x1a\n", name
        # the same files as `cryoweave view` writes: one rendering path, cached per version
        assert client.get(f"/api/runs/{run_id}/pictures").json() == results
        cache = app.state.gui.project.cache_dir / "gui"
        assert len(list(cache.glob("set*-v*/refine_fsc_resolution_per_iteration.png"))) == 1
        assert client.get("/api/runs/999/pictures").status_code == 404
    app.state.gui.project.close()


def test_explicit_parameter_titles_reach_the_form_schema(client):
    properties = client.get("/api/protocols/ImportMicrographs").json()["schema"]["properties"]
    assert properties["cs_mm"]["title"] == "Spherical aberration (Cs)"
    assert properties["voltage_kv"]["title"] == "Voltage"
    assert properties["pixel_size_a"]["title"] == "Pixel size"
    assert properties["timeout_s"]["title"] == "Close after no new file for"
    assert properties["amplitude_contrast"]["title"] == "Amplitude contrast"  # derived


def test_launch_workers_default_to_the_protocols_choice(gui_project):
    """An empty (or absent) workers field leaves --workers off the runner's command line, so
    the protocol decides (ReconstructFourier: both halves at once); a number is passed on."""
    from cryoweave.gui._checks import launch_options
    from cryoweave.gui._launch import runner_command
    from cryoweave.store import Project

    with Project.open(gui_project) as project:
        for body in ({}, {"workers": None}, {"workers": ""}, {"workers": " "}):
            options, problems = launch_options(body, project)
            assert problems == [] and "workers" not in options, body
            assert "--workers" not in runner_command(gui_project, 3, **options)
        options, problems = launch_options({"workers": "3"}, project)
        assert problems == [] and options["workers"] == 3
        command = runner_command(gui_project, 3, **options)
        assert command[command.index("--workers") + 1] == "3"
        for bad in (0, 257, "two"):
            _, problems = launch_options({"workers": bad}, project)
            assert [p["field"] for p in problems] == ["_workers"]
