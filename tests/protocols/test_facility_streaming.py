"""The facility scenario: micrographs arrive during acquisition, are imported and preprocessed
while the session goes on; the preprocessing is killed with SIGKILL midway and continued."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from conftest import REPO_ROOT, cryoweave_command, subprocess_env
from cryoweave.formats import read_image
from cryoweave.plugin import registry
from cryoweave.store import MicrographSet, Project
from cryoweave.workflow import run_protocol

N_MICROGRAPHS = 30
SHAPE = (384, 416)
WRITER = """
import sys, time
from pathlib import Path
import numpy as np
from cryoweave.formats import write_mrc
folder, n, interval = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
pause_after, resume = int(sys.argv[4]), Path(sys.argv[5])
for i in range(n):
    if i == pause_after:  # the session goes on only once the test has seen the processing
        while not resume.exists():
            time.sleep(0.05)
    rng = np.random.default_rng(i)
    image = rng.normal(100.0, 5.0, (384, 416)).astype(np.float32)
    image[rng.integers(0, 384, 20), rng.integers(0, 416, 20)] = 5000.0  # hot pixels
    write_mrc(folder / f".tmp_{i}.mrc", image, 1.0)
    data = (folder / f".tmp_{i}.mrc").read_bytes()
    (folder / f".tmp_{i}.mrc").unlink()
    with open(folder / f"mic_{i:03d}.mrc", "wb") as handle:   # written in two parts
        handle.write(data[: len(data) // 3])
        handle.flush()
        time.sleep(interval / 2)
        handle.write(data[len(data) // 3:])
    time.sleep(interval / 2)
"""


def workflow(folder: Path) -> dict:
    example = json.loads((REPO_ROOT / "examples" / "facility_workflow.json").read_text())
    importer = example["protocols"][0]
    # the test closes the import with `cryoweave stop` once the writer is done: no timeout race
    importer["params"].update(pattern=str(folder / "*.mrc"), pixel_size_a=1.0, timeout_s=600.0,
                              file_settle_s=0.3)
    return example


def micrographs_of(project_dir: Path, label: str) -> MicrographSet:
    with Project.open(project_dir) as project:
        run = project.get_run(label)
        from cryoweave.store.schema import SetRow

        with project.reader() as s:
            set_id = s.query(SetRow.id).filter_by(run_id=run.id).scalar()
        return MicrographSet(Project.open(project_dir), set_id)


def finished_outputs(project: Project, run_id: int) -> dict[Path, int]:
    """Output files of the steps recorded as done, with their modification times."""
    from cryoweave.store.schema import StepRow

    run_dir = project.root / project.get_run(run_id).folder
    with project.reader() as s:
        rows = s.query(StepRow).filter_by(run_id=run_id, status="done").all()
        files = [run_dir / p for r in rows for p in (r.outputs or [])]
    return {f: f.stat().st_mtime_ns for f in files}


def test_streaming_acquisition_with_a_crash_matches_an_uninterrupted_run(tmp_path):
    """Deterministic hand-offs instead of timing: the writer pauses after PAUSE_AFTER files
    until the test has killed the preprocessing (after it processed micrographs while the
    acquisition was going on), and the import closes by `cryoweave stop` after the writer."""
    acquisition = tmp_path / "Micrographs"
    acquisition.mkdir()
    resume = tmp_path / "resume-acquisition"
    pause_after = 10
    (tmp_path / "facility.json").write_text(json.dumps(workflow(acquisition)))
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(acquisition),
                               str(N_MICROGRAPHS), "0.25", str(pause_after), str(resume)],
                              env=subprocess_env())
    flow = subprocess.Popen(cryoweave_command("workflow", "run", "facility.json", "--project",
                                              "proj"), cwd=tmp_path, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    project_dir = tmp_path / "proj"
    seen_during_acquisition, killed, survivors, stopped = 0, False, {}, False
    deadline = time.time() + 300
    try:
        while flow.poll() is None:
            assert time.time() < deadline, "the facility workflow did not end within 300 s"
            time.sleep(0.2)
            if not (project_dir / "project.sqlite").exists():
                continue
            with Project.open(project_dir) as project:
                run = project.find_run("preprocess")
                if run is None:
                    continue
                done = micrographs_of(project_dir, "preprocess").count()
                if writer.poll() is None:
                    seen_during_acquisition = max(seen_during_acquisition, done)
                if not killed and done >= 8 and run.pid:
                    subprocess.run(["kill", "-9", str(run.pid)], check=False)
                    killed = True
                    time.sleep(0.5)
                    survivors = finished_outputs(project, run.id)
                    resume.touch()
            if killed and not stopped and writer.poll() is not None:
                closing = subprocess.run(
                    cryoweave_command("stop", "import", "--project", "proj"), cwd=tmp_path,
                    env=subprocess_env(), capture_output=True, text=True, timeout=120)
                assert closing.returncode == 0, closing.stderr
                stopped = True
        writer.wait(timeout=60)
        flow.communicate(timeout=120)
    finally:
        resume.touch()
        for process in (writer, flow):
            if process.poll() is None:
                process.kill()
                process.wait()
    assert killed, "the preprocessing run was not killed midway"
    assert seen_during_acquisition > 0, "no micrograph was preprocessed during acquisition"
    assert flow.returncode != 0  # the workflow reports the killed run as not finished

    resumed = subprocess.run(cryoweave_command("run-protocol", "--continue", "preprocess",
                                               "--project", "proj", "--json", "--quiet"),
                             cwd=tmp_path, env=subprocess_env(), capture_output=True,
                             text=True, timeout=120)
    if resumed.returncode != 0:  # say why: the run's own log and JSON
        logs = "".join(path.read_text()[-3000:]
                       for path in sorted((project_dir / "Runs").glob("*/logs/run.log")))
        raise AssertionError(f"continue failed:\n{resumed.stdout[-2000:]}\n{logs}")
    imported = micrographs_of(project_dir, "import")
    output = micrographs_of(project_dir, "preprocess")
    assert imported.is_closed and imported.count() == N_MICROGRAPHS
    assert output.is_closed and output.count() == N_MICROGRAPHS
    frame = output.to_frame().sort_values("item_id")
    assert frame["item_id"].tolist() == list(range(1, N_MICROGRAPHS + 1))  # no duplicates
    folder = Path(frame["path"].iloc[0]).parent
    assert survivors
    for path, mtime in survivors.items():  # recorded as done before the crash: not redone
        assert path.stat().st_mtime_ns == mtime, f"{path.name} was redone"
    assert {p.name for p in survivors} <= {Path(p).name for p in frame["path"]}
    assert folder.is_dir()

    # the uninterrupted reference: the same micrographs, imported at once
    reference_project, ref = run_protocol(
        tmp_path / "reference", registry().get("ImportMicrographs"),
        {"pattern": str(acquisition / "*.mrc"), "pixel_size_a": 1.0})
    preprocess_params = workflow(acquisition)["protocols"][1]["params"]
    _, ref = run_protocol(tmp_path / "reference", registry().get("PreprocessMicrographs"),
                          {**preprocess_params, "micrographs": {"run": 1,
                                                                "output": "micrographs"}})
    expected = MicrographSet(reference_project, ref.outputs["micrographs"]).to_frame()
    for ours, theirs in zip(frame["path"], expected.sort_values("item_id")["path"],
                            strict=True):
        np.testing.assert_array_equal(read_image(ours)[0], read_image(theirs)[0])
    assert frame["pixel_size_a"].tolist() == [2.0] * N_MICROGRAPHS
