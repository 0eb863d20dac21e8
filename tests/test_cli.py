"""The `cryoweave` command as users run it (real subprocesses)."""

from __future__ import annotations

import hashlib
import json
import sys

import numpy as np
import starfile

from cryoweave.demo.synthetic import write_particles


def write_json(path, data):
    path.write_text(json.dumps(data))
    return path.name


def test_init_protocols_and_form(run_cli, tmp_path):
    assert run_cli("init", "proj").returncode == 0
    assert (tmp_path / "proj" / "project.sqlite").exists()
    listed = run_cli("protocols", COLUMNS="200")
    assert listed.returncode == 0 and "ImportMicrographs" in listed.stdout
    form = run_cli("form", "ImportMicrographs")
    schema = json.loads(form.stdout)
    assert schema["x-protocol"] == "cryoweave:ImportMicrographs"
    assert schema["properties"]["timeout_s"]["visible_if"] == {"streaming": True}


def test_bad_params_list_every_problem_without_traceback(run_cli, tmp_path):
    name = write_json(tmp_path / "params.json",
                      {"path": 5, "pixel_size_a": -1, "datadir": None, "bogus": True})
    result = run_cli("run-protocol", "ImportParticles", name, "--project", "proj")
    assert result.returncode == 2
    assert "3 problems found" in result.stderr
    assert "'path'" in result.stderr and "pixel_size_a" in result.stderr
    assert "bogus" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "proj").exists()
    debug = run_cli("--debug", "run-protocol", "ImportParticles", name, "--project", "proj")
    assert "Traceback" in debug.stderr and debug.returncode == 2


def test_unreadable_params_file_and_unknown_run(run_cli, tmp_path):
    (tmp_path / "broken.json").write_text("{'single quotes': 1}")
    result = run_cli("run-protocol", "ImportParticles", "broken.json")
    assert result.returncode == 2 and "broken.json: not valid JSON" in result.stderr
    name = write_json(tmp_path / "p.json", {"particles": {"run": 7, "output": "particles"}})
    run_cli("init", "proj")
    result = run_cli("run-protocol", "ToyCountParticles", name, "--project", "proj")
    assert result.returncode == 2 and "no run 7" in result.stderr


def test_label_with_an_escape_sequence_is_refused_and_nothing_created(run_cli, tmp_path):
    name = write_json(tmp_path / "steps.json", {"n_steps": 1})
    result = run_cli("run-protocol", "ToySteps", name, "--project", "proj",
                     "--label", "ok\x1b[2J\x1b[31mred")
    assert result.returncode == 2
    assert "run label 'ok\\x1b[2J\\x1b[31mred' contains control or invisible characters " \
           "(U+001B); use printable characters only" in result.stderr
    assert "\x1b" not in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "proj").exists()


def test_a_used_label_is_refused_before_the_implicit_import(run_cli, tmp_path):
    star = write_particles(tmp_path, 10, 16, 2.0, np.random.default_rng(1))
    name = write_json(tmp_path / "count.json", {"particles": star.name})
    first = run_cli("run-protocol", "ToyCountParticles", name, "--project", "proj", "--label",
                    "count", "--quiet")
    assert first.returncode == 0, first.stderr
    listed = run_cli("runs", "--project", "proj", COLUMNS="200").stdout
    again = run_cli("run-protocol", "ToyCountParticles", name, "--project", "proj", "--label",
                    "count", "--quiet")
    assert again.returncode == 2
    assert "run label 'count' is already used in this project (run 2)" in again.stderr
    assert run_cli("runs", "--project", "proj", COLUMNS="200").stdout == listed


def test_runs_and_show_never_print_control_characters_of_older_labels(run_cli, tmp_path):
    from cryoweave.plugin import registry
    from cryoweave.store.schema import Run
    from cryoweave.workflow import prepare_run

    project, run_id = prepare_run(tmp_path / "proj", registry().get("ToySteps"),
                                  {"n_steps": 1}, label="fine")
    with project.transaction() as s:  # as a project made before labels were checked
        s.get(Run, run_id).label = "old\x1b[2J[bold]label"
    project.close()
    for args in (("runs",), ("show", "1")):
        result = run_cli(*args, "--project", "proj", COLUMNS="300")
        assert result.returncode == 0, result.stderr
        assert "\x1b" not in result.stdout and "old\\x1b[2J[bold]label" in result.stdout


def test_run_show_export_and_implicit_import(run_cli, tmp_path):
    star = write_particles(tmp_path, 30, 16, 2.0, np.random.default_rng(1))
    before = hashlib.sha256(star.read_bytes()).hexdigest()
    name = write_json(tmp_path / "count.json", {"particles": star.name})
    result = run_cli("run-protocol", "ToyCountParticles", name, "--project", "proj", "--json",
                     "--label", "count")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["run"] == 2 and report["status"] == "finished"  # run 1 imported the STAR
    assert report["outputs"]["counts"]["size"] == 1
    runs = run_cli("runs", "--project", "proj", COLUMNS="250")
    assert "ImportParticles" in runs.stdout and "finished" in runs.stdout
    shown = run_cli("show", "count", "--project", "proj", COLUMNS="200")
    assert "finished" in shown.stdout and "output counts" in shown.stdout
    exported = run_cli("export", "1.particles", "out/particles.star", "--project", "proj")
    assert exported.returncode == 0, exported.stderr
    out = starfile.read(tmp_path / "out/particles.star")
    original = starfile.read(star)
    assert out["particles"]["rlnImageName"].iloc[0] == "000001@../particles.mrcs"
    np.testing.assert_allclose(out["particles"]["rlnAngleTilt"],
                               original["particles"]["rlnAngleTilt"])
    assert hashlib.sha256(star.read_bytes()).hexdigest() == before  # input never modified
    missing = run_cli("export", "1.nothing", "x.star", "--project", "proj")
    assert missing.returncode == 2 and "no output 'nothing'" in missing.stderr


def test_failed_run_exit_code_message_and_continue(run_cli, tmp_path):
    name = write_json(tmp_path / "p.json", {"n_steps": 3, "fail_step": 1})
    result = run_cli("run-protocol", "ToySteps", name, "--project", "proj")
    assert result.returncode == 3
    assert "told to fail" in result.stderr and "run.log" in result.stderr
    assert "Traceback" not in result.stderr
    shown = run_cli("show", "1", "--project", "proj", COLUMNS="200")
    assert "failed" in shown.stdout and "step_failed" in shown.stdout
    again = run_cli("run-protocol", "--continue", "1", "--project", "proj")
    assert again.returncode == 3  # still told to fail, but finished steps were skipped
    assert "1 skipped" in again.stderr or "1 skipped" in again.stdout


def test_run_protocol_alias(tmp_path):
    import subprocess

    from conftest import subprocess_env

    name = write_json(tmp_path / "p.json", {"n_steps": 2})
    result = subprocess.run([sys.executable, "-c", "from cryoweave.cli import run_protocol_main;"
                             " run_protocol_main()", "ToySteps", name, "--project", "proj",
                             "--json", "--quiet"], cwd=tmp_path, env=subprocess_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["outputs"]["records"]["size"] == 6


def test_stop_unknown_run(run_cli, tmp_path):
    run_cli("init", "proj")
    result = run_cli("stop", "42", "--project", "proj")
    assert result.returncode == 2 and "no run '42'" in result.stderr


def test_downsample_command(run_cli, tmp_path):
    star = write_particles(tmp_path, 20, 32, 1.0, np.random.default_rng(2))
    result = run_cli("downsample", star.name, "-D", "16", "-o", "out", "--project", "proj")
    assert result.returncode == 0, result.stderr
    assert "20 images" in result.stdout and "2 Å/px" in result.stdout
    assert (tmp_path / "out/particles.16.mrcs").exists()
    assert (tmp_path / "out/particles.16.star").exists()
    again = run_cli("downsample", star.name, "-D", "16", "-o", "out2", "--project", "proj")
    assert "from the project cache" in again.stdout
    bad = run_cli("downsample", star.name, "-D", "15", "-o", "bad")
    assert bad.returncode == 2 and "box_px=15 is odd" in bad.stderr
    assert not (tmp_path / "bad").exists()
    missing = run_cli("downsample", "nope.star", "-D", "16", "-o", "bad")
    assert missing.returncode == 2 and "nope.star: STAR file not found" in missing.stderr
