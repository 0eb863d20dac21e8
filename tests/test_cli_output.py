"""What the `cryoweave` command prints for people and for scripts (real subprocesses, files)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import starfile

from conftest import cryoweave_command, subprocess_env
from cryoweave.cli._progress import rate_text, step_line

LABEL = "reconstruction-with-a-label-longer-than-a-narrow-terminal"


def cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(cryoweave_command(*args), cwd=cwd, env=subprocess_env(**env),
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def reconstructed(tmp_path_factory):
    """Simulated particles reconstructed with a params file in a sub-folder (``job/``) that
    names the particles relative to itself, the protocol name in the wrong case."""
    root = tmp_path_factory.mktemp("recon")
    simulated = cli(root, "simulate", "-o", "sim", "--phantom", "-n", "200", "--box", "32",
                    "--pixel-size", "3")
    assert simulated.returncode == 0, simulated.stderr
    (root / "job").mkdir()
    (root / "job" / "rec.json").write_text(json.dumps(
        {"particles": "../sim/particles.star", "gridding_iterations": 2}))
    result = cli(root, "run-protocol", "reconstructfourier", "job/rec.json", "--project",
                 "proj", "--label", LABEL)
    assert result.returncode == 0, result.stderr
    return root, result


# -- progress ---------------------------------------------------------------------------------
def test_rate_counts_only_the_items_done_since_the_first_report():
    # the first report came with 500 items already done: they are not "done in no time"
    assert rate_text(500, 10.0, 500, 10.0) == ""
    assert rate_text(500, 10.0, 600, 10.1) == ""  # too short a window to say
    assert rate_text(500, 10.0, 1000, 12.0) == "250/s"
    assert rate_text(0, 0.0, 3, 2.0) == "1.5/s"


def test_step_line_names_the_step_time_and_resolution():
    assert step_line("finalize", True, 1.26, {"fsc0143_interpolated": 4.4567}) == \
        "step finalize done in 1.3 s, resolution 4.46 Å"
    assert step_line("iter03/reconstruct", True, 2.0, {"resolution_a": 7.0, "iteration": 3}) \
        == "step iter03/reconstruct done in 2.0 s, resolution 7.00 Å (iteration 3)"
    assert step_line("work/001", False, 0.5, None) == "step work/001 FAILED in 0.5 s"


# -- run-protocol, show, runs -----------------------------------------------------------------
def test_run_protocol_prints_the_summary_steps_and_the_name_it_used(reconstructed):
    _root, result = reconstructed
    assert "summary: resolution_0143_a" in result.stdout
    assert "particles_used 200" in result.stdout and "box_px 32" in result.stdout
    # stderr is not a terminal: one line per finished step, with the resolution when known
    assert "step insert/half1 done in" in result.stderr
    finalize = [ln for ln in result.stderr.splitlines() if ln.startswith("step finalize done")]
    assert len(finalize) == 1 and "resolution" in finalize[0] and finalize[0].endswith("Å")
    assert "'reconstructfourier' taken as ReconstructFourier" in result.stderr


def test_show_and_runs_json_share_the_run_keys(reconstructed):
    root, _ = reconstructed
    shown = cli(root, "show", LABEL, "--project", "proj", "--json")
    assert shown.returncode == 0, shown.stderr
    run = json.loads(shown.stdout)
    assert {"id", "label", "protocol", "status", "created_at", "started_at", "finished_at",
            "inputs", "outputs", "summary", "params", "folder"} <= set(run)
    assert run["protocol"] == "cryoweave:ReconstructFourier" and run["label"] == LABEL
    assert run["inputs"]["particles"]["set"] == 1
    assert run["outputs"]["fsc"]["size"] == 1 and run["outputs"]["volume"]["state"] == "closed"
    summary = run["summary"]
    assert 6.0 < summary["resolution_0143_a"] < summary["resolution_05_a"] < 60.0
    assert summary["particles_used"] == 200
    assert summary["pixel_size_a"] == 3.0 and summary["box_px"] == 32
    listed = json.loads(cli(root, "runs", "--project", "proj", "--json").stdout)
    assert [r["id"] for r in listed] == [1, 2]
    assert listed[1] == run
    assert listed[0]["summary"] == {"particles": 200, "pixel_size_a": 3.0, "box_px": 32}
    text = cli(root, "show", LABEL, "--project", "proj")
    assert f"resolution_0143_a {summary['resolution_0143_a']:.4g}" in text.stdout


def test_piped_tables_are_whole_tab_separated_lines(reconstructed):
    root, _ = reconstructed
    runs = cli(root, "runs", "--project", "proj", COLUMNS="40")
    lines = runs.stdout.splitlines()
    assert lines[0].split("\t")[:4] == ["id", "label", "protocol", "status"]
    assert lines[2].split("\t")[1] == LABEL and "…" not in runs.stdout
    protocols = cli(root, "protocols", COLUMNS="40")
    names = [line.split("\t")[0] for line in protocols.stdout.splitlines()[1:]]
    assert "ReconstructFourier" in names and "ReconstructHighRes" in names
    listed = json.loads(cli(root, "protocols", "--json").stdout)
    fourier = next(p for p in listed if p["name"] == "ReconstructFourier")
    assert fourier["identity"] == "cryoweave:ReconstructFourier"
    assert fourier["outputs"] == {"volume": "volumes", "fsc": "records"}


# -- FSC export and view ----------------------------------------------------------------------
def test_fsc_exports_as_relion_star_and_csv_and_is_drawn(reconstructed):
    root, _ = reconstructed
    summary = json.loads(cli(root, "show", LABEL, "--project", "proj", "--json").stdout)[
        "summary"]
    for name in ("out/fsc.star", "out/fsc.csv"):
        result = cli(root, "export", f"{LABEL}.fsc", name, "--project", "proj")
        assert result.returncode == 0, result.stderr
    blocks = starfile.read(root / "out/fsc.star", always_dict=True)
    fsc = blocks["fsc"]
    assert list(fsc.columns[:4]) == ["rlnSpectralIndex", "rlnResolution",
                                     "rlnAngstromResolution", "rlnFourierShellCorrelation"]
    assert fsc["rlnSpectralIndex"].tolist() == list(range(len(fsc)))
    assert fsc["rlnAngstromResolution"].iloc[2] == pytest.approx(1 / fsc["rlnResolution"].iloc[2])
    assert float(blocks["general"]["rlnFinalResolution"].iloc[0]) == pytest.approx(
        summary["resolution_0143_a"], abs=1e-3)
    table = pd.read_csv(root / "out/fsc.csv")
    assert table["rlnFourierShellCorrelation"].tolist() == pytest.approx(
        fsc["rlnFourierShellCorrelation"].tolist(), abs=1e-6)
    # the 0.143 crossing of the exported curve brackets the reported resolution
    below = table.index[(table["rlnFourierShellCorrelation"] < 0.143) & (table.index > 0)][0]
    assert table["rlnAngstromResolution"][below] <= summary["resolution_0143_a"] <= \
        table["rlnAngstromResolution"][below - 1]
    view = cli(root, "view", f"{LABEL}.fsc", "--project", "proj")
    assert view.returncode == 0, view.stderr
    png = Path(view.stdout.splitlines()[0])
    assert png.name == f"{LABEL}_fsc.png" and png.is_absolute() and png.stat().st_size > 5000
    described = json.loads(cli(root, "view", f"{LABEL}.fsc", "--project", "proj",
                               "--json").stdout)
    assert described["set"]["kind"] == "records" and str(png) in described["files"]


# -- exports of particles and volumes ---------------------------------------------------------
def test_volume_to_star_is_refused(reconstructed):
    root, _ = reconstructed
    result = cli(root, "export", f"{LABEL}.volume", "out/map.star", "--project", "proj")
    assert result.returncode == 2 and "exported as MRC" in result.stderr
    assert str(root / "out/map.star") in result.stderr
    assert not (root / "out/map.star").exists()


def test_particles_to_a_folder_with_copied_stacks_and_fixed_precision(reconstructed):
    root, _ = reconstructed
    (root / "bundle").mkdir()
    result = cli(root, "export", "1.particles", "bundle", "--project", "proj",
                 "--copy-stacks")
    assert result.returncode == 0, result.stderr
    star = root / "bundle" / "particles.star"
    assert (root / "bundle" / "particles.mrcs").stat().st_size == \
        (root / "sim" / "particles.mrcs").stat().st_size
    particles = starfile.read(star, always_dict=True)["particles"]
    assert particles["rlnImageName"].iloc[0] == "000001@particles.mrcs"
    block = star.read_text().split("data_particles")[1].splitlines()
    labels = [ln.split()[0] for ln in block if ln.startswith("_rln")]
    row = next(ln for ln in block if ln.startswith("000001@")).split()
    for label in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst"):
        value = row[labels.index(f"_{label}")]
        assert len(value.split(".")[1]) == 6, (label, value)
    original = starfile.read(root / "sim" / "particles.star", always_dict=True)["particles"]
    assert particles["rlnAngleTilt"].tolist() == pytest.approx(
        original["rlnAngleTilt"].tolist(), abs=1e-6)


# -- paths ------------------------------------------------------------------------------------
def test_paths_in_a_params_file_are_taken_from_its_folder(tmp_path):
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "import.json").write_text(json.dumps({"path": "sim/particles.star"}))
    result = cli(tmp_path, "run-protocol", "ImportParticles", "job/import.json", "--project",
                 "job/proj")
    assert result.returncode == 2
    assert str(tmp_path / "job" / "sim" / "particles.star") in result.stderr
    missing = cli(tmp_path, "run-protocol", "ImportParticles", "job/nothing.json")
    assert missing.returncode == 2
    assert f"{tmp_path / 'job' / 'nothing.json'}: params file not found" in missing.stderr
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "wf.json").write_text(json.dumps({"protocols": [
        {"label": "imp", "protocol": "ImportParticles",
         "params": {"path": "data/particles.star"}}]}))
    flow = cli(tmp_path, "workflow", "run", "flows/wf.json", "--project", "proj")
    assert flow.returncode == 2
    assert str(tmp_path / "flows" / "data" / "particles.star") in flow.stderr


# -- workflows --------------------------------------------------------------------------------
def test_workflow_names_an_unknown_label_and_the_known_ones(tmp_path):
    (tmp_path / "wf.json").write_text(json.dumps({"protocols": [
        {"label": "producer", "protocol": "ToyProducer", "params": {"n_items": 3}},
        {"label": "consumer", "protocol": "ToyConsumer",
         "params": {"records": {"run": "prodcer", "output": "records"}}}]}))
    result = cli(tmp_path, "workflow", "run", "wf.json", "--project", "proj")
    assert result.returncode == 2
    assert "unknown label 'prodcer'" in result.stderr and "producer" in result.stderr
    assert "does not exist yet" not in result.stderr


def test_workflow_json_after_an_interruption(tmp_path):
    (tmp_path / "wf.json").write_text(json.dumps({"protocols": [
        {"label": "slow", "protocol": "ToySteps",
         "params": {"n_steps": 50, "sleep_s": 0.5, "chain": True}}]}))
    process = subprocess.Popen(
        cryoweave_command("workflow", "run", "wf.json", "--project", "proj", "--json"),
        cwd=tmp_path, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    log = tmp_path / "proj" / "Runs" / "000001_ToySteps" / "extra" / "executions.log"
    deadline = time.monotonic() + 120
    while not log.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert log.exists(), "the run never started"
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    summary = json.loads(stdout)
    assert summary["state"] == "interrupted" and summary["runs"] == {"slow": 1}
    assert summary["status"]["slow"] != "finished"
    assert "interrupted" in stderr


# -- small things -----------------------------------------------------------------------------
def test_simulate_help_shows_its_defaults(tmp_path):
    shown = " ".join(cli(tmp_path, "simulate", "--help", COLUMNS="200").stdout.split())
    assert "2 Å with --phantom" in shown and "64 with --phantom" in shown


def imported_modules(cwd: Path, *args: str) -> set[str]:
    """Modules the command imports (from ``python -X importtime``)."""
    command = cryoweave_command(*args)
    result = subprocess.run([command[0], "-X", "importtime", *command[1:]], cwd=cwd,
                            env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines()
            if line.startswith("import time:") and not line.rstrip().endswith("package")}


def packages(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_light_commands_do_not_import_heavy_modules(tmp_path):
    heavy = {"numpy", "pandas", "scipy", "matplotlib", "sqlalchemy", "rich", "pydantic"}
    assert packages(imported_modules(tmp_path, "--help")) & heavy == set()
    for command in (("form", "ImportParticles"), ("protocols",)):
        assert packages(imported_modules(tmp_path, *command)) & {"scipy", "matplotlib",
                                                                 "rich"} == set()
    assert cli(tmp_path, "init", "proj").returncode == 0
    runs = imported_modules(tmp_path, "runs", "--project", "proj")
    assert packages(runs) & {"scipy", "matplotlib", "rich", "numpy", "pandas"} == set()
    assert "cryoweave.engine" not in runs and "cryoweave.formats" not in runs


def test_import_summary_counts_micrographs_and_failures(tmp_path):
    from cryoweave.formats import write_mrc

    mics = tmp_path / "job" / "Micrographs"
    mics.mkdir(parents=True)
    for i in range(2):
        write_mrc(mics / f"mic_{i}.mrc", np.zeros((1, 48, 64), np.float32), 1.2)
    write_mrc(mics / "mic_movie.mrc", np.zeros((3, 48, 64), np.float32), 1.2)  # 3 frames
    (tmp_path / "job" / "import.json").write_text(json.dumps({"pattern": "Micrographs/*.mrc"}))
    result = cli(tmp_path, "run-protocol", "ImportMicrographs", "job/import.json", "--project",
                 "proj", "--json")
    report = json.loads(result.stdout)
    assert report["summary"] == {"micrographs": 2, "pixel_size_a": 1.2, "failed": 1}
    assert report["details"]["params"]["pattern"] == str(mics / "*.mrc")


def test_every_built_in_protocol_has_a_summary():
    from cryoweave.plugin import Protocol, registry

    built_in = [cls for cls in registry().protocols() if cls.plugin == "cryoweave"]
    assert len(built_in) >= 9
    assert [cls.__name__ for cls in built_in if cls.summary is Protocol.summary] == []


def test_downsample_progress_bar_only_on_a_terminal(monkeypatch):
    """On a terminal the images bar is drawn; in a pipe or a log nothing is (and rich.progress,
    not needed, is not imported)."""
    import io

    from rich.console import Console

    from cryoweave.cli import _tools

    screen = io.StringIO()
    monkeypatch.setattr(_tools, "err", Console(file=screen, force_terminal=True, width=80))
    with _tools._image_progress() as progress:
        progress(5, 10)
    assert "images" in screen.getvalue() and "5/10" in screen.getvalue()
    log = io.StringIO()
    monkeypatch.setattr(_tools, "err", Console(file=log, force_terminal=False))
    with _tools._image_progress() as progress:
        progress(5, 10)
    assert log.getvalue() == ""
    import subprocess
    import sys

    code = ("import sys; from cryoweave.cli import _tools\n"
            "with _tools._image_progress() as progress:\n    progress(1, 2)\n"
            "print('rich.progress' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"  # stderr is a pipe here


@pytest.mark.parametrize(("env", "expected"), [({}, "False False"),
                                               ({"FORCE_COLOR": "1"}, "True True")])
def test_a_lazy_console_knows_a_pipe_without_importing_rich(env, expected):
    """Asked whether a pipe is a terminal, the console says no without importing rich (30 ms
    of every `cryoweave downsample`); rich's own switch that forces a terminal still does."""
    import os
    import subprocess
    import sys

    code = ("import sys; from cryoweave.cli._common import LazyConsole\n"
            "print(LazyConsole(stderr=True).is_terminal, 'rich' in sys.modules)")
    environ = {k: v for k, v in os.environ.items()
               if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**environ, **env}).stdout.strip()
    assert out == expected

