"""Inputs given as paths are checked like run references before anything is created.

The implicit import's own checks and the files' headers (box, pixel size, item count) are
read first, so the consuming protocol's cross-field checks run on them: every problem is
reported at once, naming the user's key, with no run row and no run folder left behind.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import starfile

from cryoweave.demo.synthetic import write_particles
from cryoweave.errors import ParamError
from cryoweave.formats import write_mrc
from cryoweave.plugin import registry
from cryoweave.store import Project
from cryoweave.workflow import WorkflowEntry, prepare_run, prepare_workflow


def empty_project(tmp_path, name="proj"):
    Project.create(tmp_path / name).close()
    return tmp_path / name


def assert_runs(project_dir, count):
    """``count`` runs in the database and as many run folders: nothing was left behind."""
    with Project.open(project_dir) as project:
        assert len(project.list_runs()) == count
    assert len(list((project_dir / "Runs").iterdir())) == count


def refused(tmp_path, protocol, raw, project="proj"):
    """The problems of ``raw``, given to ``protocol`` in an empty project (which stays empty)."""
    project_dir = empty_project(tmp_path, project)
    with pytest.raises(ParamError) as info:
        prepare_run(project_dir, registry().get(protocol), raw, base_dir=tmp_path)
    assert_runs(project_dir, 0)
    return info.value.problems


def bare_star(tmp_path, name, stack, **columns):
    """A RELION 3.1 STAR of every image of ``stack`` with only the given extra columns."""
    n = 4
    particles = {"rlnImageName": [f"{i + 1}@{stack}" for i in range(n)],
                 "rlnOpticsGroup": [1] * n, **{k: [v] * n for k, v in columns.items()}}
    path = tmp_path / name
    starfile.write({"optics": pd.DataFrame({"rlnOpticsGroup": [1], "rlnImagePixelSize": [2.0],
                                            "rlnVoltage": [300.0], "rlnSphericalAberration":
                                            [2.7], "rlnAmplitudeContrast": [0.1]}),
                    "particles": pd.DataFrame(particles)}, path, overwrite=True)
    return path


@pytest.fixture
def star32(tmp_path):
    return write_particles(tmp_path, 10, 32, 2.0, np.random.default_rng(0), name="x")


def test_box_beyond_a_path_input_is_refused_as_for_a_run_reference(run_cli, tmp_path, star32):
    (tmp_path / "p.json").write_text(json.dumps({"particles": "x.star", "box_px": 64}))
    assert run_cli("init", "proj").returncode == 0
    by_path = run_cli("run-protocol", "Downsample", "p.json", "--project", "proj")
    assert by_path.returncode == 2, by_path.stderr
    assert "box_px=64 exceeds the input box 32; choose an even value ≤ 32" in by_path.stderr
    assert "Traceback" not in by_path.stderr
    assert_runs(tmp_path / "proj", 0)  # no finished import, no failed Downsample

    (tmp_path / "i.json").write_text(json.dumps({"path": "x.star"}))
    assert run_cli("run-protocol", "ImportParticles", "i.json", "--project", "proj",
                   "--quiet").returncode == 0
    (tmp_path / "r.json").write_text(json.dumps({"particles": {"run": 1, "output": "particles"},
                                                 "box_px": 64}))
    by_ref = run_cli("run-protocol", "Downsample", "r.json", "--project", "proj")
    assert by_ref.returncode == 2
    assert by_ref.stderr.splitlines()[-1] == by_path.stderr.splitlines()[-1]  # same check
    assert_runs(tmp_path / "proj", 1)


def test_bad_mask_file_and_infinite_value_are_both_reported_by_the_cli(run_cli, tmp_path,
                                                                       star32):
    (tmp_path / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n" * 40)
    (tmp_path / "p.json").write_text('{"particles": "x.star", "mask": "passwd", '
                                     '"max_resolution_a": Infinity}')
    assert run_cli("init", "proj").returncode == 0
    result = run_cli("run-protocol", "ReconstructFourier", "p.json", "--project", "proj")
    assert result.returncode == 2, result.stderr
    assert "2 problems found" in result.stderr
    assert "parameter 'max_resolution_a': Input should be a finite number" in result.stderr
    assert "input 'mask': " in result.stderr and "passwd" in result.stderr
    assert "'path'" not in result.stderr and "Traceback" not in result.stderr
    assert_runs(tmp_path / "proj", 0)


def test_cross_checks_between_two_path_inputs(tmp_path, star32):
    write_mrc(tmp_path / "mask16.mrc", np.ones((16, 16, 16)), 2.0)
    problems = refused(tmp_path, "ReconstructFourier",
                       {"particles": "x.star", "mask": "mask16.mrc"})
    assert problems == ["the mask is 16 px but the particles are 32 px; resample the mask"]


def test_particles_file_without_poses_is_refused_by_reconstruction(tmp_path, star32):
    bare_star(tmp_path, "noposes.star", "x.mrcs", rlnDefocusU=1e4, rlnDefocusV=1e4,
              rlnDefocusAngle=0.0)
    problems = refused(tmp_path, "ReconstructFourier", {"particles": "noposes.star"})
    assert problems == ["the particles have no poses (rlnAngleRot/Tilt/Psi); "
                        "ReconstructFourier needs known orientations"]


def test_every_problem_of_every_path_input_of_a_refinement_at_once(tmp_path, star32):
    bare_star(tmp_path, "noctf.star", "x.mrcs")
    (tmp_path / "ref.mrc").write_text("not a map")
    write_mrc(tmp_path / "flat.mrc", np.ones((4, 32, 32)), 2.0, volume=True)
    problems = refused(tmp_path, "ReconstructHighRes",
                       {"particles": "noctf.star", "initial_volumes": "ref.mrc",
                        "adhoc_mask": "flat.mrc", "regularization": -1})
    assert len(problems) == 3, problems
    assert problems[0].startswith("parameter 'regularization'")
    assert problems[1] == (f"input 'initial_volumes': {tmp_path / 'ref.mrc'}: not a readable "
                           "MRC file (Couldn't read enough bytes for MRC header)")
    assert problems[2] == (f"input 'adhoc_mask': {tmp_path / 'flat.mrc'}: the map is "
                           "32×32×4; cubic maps are required")
    # with valid params the protocol's own checks run on the particles file's metadata too
    problems = refused(tmp_path, "ReconstructHighRes",
                       {"particles": "noctf.star", "initial_volumes": "ref.mrc"},
                       project="proj2")
    assert len(problems) == 2, problems
    assert problems[0].startswith("input 'initial_volumes': ")
    assert problems[1] == "the particles have no CTF (defocus); refinement needs it"


def test_problems_of_the_import_name_the_users_key(tmp_path, star32):
    (tmp_path / "x.txt").write_text("")
    problems = refused(tmp_path, "ReconstructFourier", {"particles": "x.txt"})
    assert len(problems) == 1
    assert problems[0].startswith(f"input 'particles': {tmp_path / 'x.txt'} is not a particle "
                                  "file; expected .star, .cs")


def test_stacks_found_only_with_datadir(tmp_path):
    (tmp_path / "data").mkdir()
    write_particles(tmp_path / "data", 10, 32, 2.0, np.random.default_rng(0), name="x")
    bare_star(tmp_path, "rel.star", "x.mrcs")  # relative to data/, not to the STAR
    problems = refused(tmp_path, "ReconstructFourier", {"particles": "rel.star"})
    assert len(problems) == 1 and problems[0].startswith("input 'particles': ")
    assert "referenced image stack(s) not found" in problems[0]
    assert problems[0].endswith(
        "(datadir, strip_prefix: parameters of ImportParticles; import the file with "
        "ImportParticles first and give that run's output as 'particles')")
    wrong = refused(tmp_path, "Downsample", {"particles": "rel.star", "box_px": 16,
                                             "datadir": str(tmp_path / "nowhere")},
                    project="proj2")
    assert wrong == [f"parameter 'datadir': folder {tmp_path / 'nowhere'} not found"]
    # the forwarded datadir is used to read the stacks' headers: the box check sees 32 px
    found = refused(tmp_path, "Downsample", {"particles": "rel.star", "box_px": 64,
                                             "datadir": str(tmp_path / "data")},
                    project="proj3")
    assert found == ["box_px=64 exceeds the input box 32; choose an even value ≤ 32"]


def test_micrographs_too_small_for_the_crop(tmp_path):
    (tmp_path / "mics").mkdir()
    for i in range(2):
        write_mrc(tmp_path / "mics" / f"m{i}.mrc", np.zeros((32, 48)), 1.0)
    problems = refused(tmp_path, "PreprocessMicrographs",
                       {"micrographs": "mics/*.mrc", "do_crop": True, "crop_px": 20})
    assert len(problems) == 1
    assert problems[0].startswith("the smallest micrograph is 48×32: ")


def test_no_readable_micrograph(tmp_path):
    (tmp_path / "mics").mkdir()
    for i in range(2):
        (tmp_path / "mics" / f"m{i}.mrc").write_text("text")
    problems = refused(tmp_path, "PreprocessMicrographs",
                       {"micrographs": "mics/*.mrc", "do_invert": True})
    assert len(problems) == 1
    assert problems[0] == (f"input 'micrographs': {tmp_path / 'mics/m0.mrc'}: not a readable "
                           "MRC file (Couldn't read enough bytes for MRC header)")


def test_a_stack_given_as_micrographs_is_refused_before_a_run(tmp_path):
    """Found by tools/malformed_campaign.py: the import's per-file rules (one section, a
    pixel size in range) ran only in the import step, after the import run existed."""
    (tmp_path / "mics").mkdir()
    write_mrc(tmp_path / "mics" / "stack.mrc", np.zeros((3, 16, 16), np.float32), 1.0)
    problems = refused(tmp_path, "PreprocessMicrographs",
                       {"micrographs": "mics/*.mrc", "do_invert": True})
    assert len(problems) == 1
    assert "expected one micrograph, found 3 sections" in problems[0]


@pytest.mark.parametrize("content, message", [
    ("not a star file", r"no particle table with the required column rlnImageName"),
    (None, r"has no rlnAngleRot, rlnAngleTilt, rlnAnglePsi for every particle"),
])
def test_bad_poses_star(tmp_path, star32, content, message):
    poses = tmp_path / "poses.star"
    if content is None:
        bare_star(tmp_path, "poses.star", "x.mrcs")
    else:
        poses.write_text(content)
    problems = refused(tmp_path, "SimulateParticles",
                       {"phantom": True, "box_px": 16, "poses_star": str(poses)})
    assert len(problems) == 1 and problems[0].startswith("parameter 'poses_star': ")
    assert re.search(message, problems[0]), problems[0]


def test_workflow_checks_path_inputs_and_imports_it_plans(run_cli, tmp_path, star32):
    star = str(star32)
    entries = [
        WorkflowEntry("import", "ImportParticles", {"path": star}),
        WorkflowEntry("by_ref", "Downsample",
                      {"particles": {"run": "import", "output": "particles"}, "box_px": 64}),
        WorkflowEntry("by_path", "Downsample", {"particles": star, "box_px": 48}),
        WorkflowEntry("ok", "Downsample", {"particles": star, "box_px": 16}),
    ]
    project_dir = empty_project(tmp_path)
    with pytest.raises(ParamError) as info:
        prepare_workflow(project_dir, entries)
    assert info.value.problems == [
        "by_ref: box_px=64 exceeds the input box 32; choose an even value ≤ 32",
        "by_path: box_px=48 exceeds the input box 32; choose an even value ≤ 32"]
    assert_runs(project_dir, 0)
    (tmp_path / "wf.json").write_text(json.dumps({"protocols": [
        {"label": e.label, "protocol": e.protocol, "params": e.params} for e in entries]}))
    result = run_cli("workflow", "run", "wf.json", "--project", "proj")
    assert result.returncode == 2 and "2 problems found" in result.stderr, result.stderr
    assert "by_path: box_px=48 exceeds the input box 32" in result.stderr
    assert "Traceback" not in result.stderr
    assert_runs(project_dir, 0)


def test_import_of_micrographs_none_of_which_is_readable(tmp_path):
    (tmp_path / "mics").mkdir()
    for i in range(2):
        (tmp_path / "mics" / f"m{i}.mrc").write_text("text")
    problems = refused(tmp_path, "ImportMicrographs",
                       {"pattern": str(tmp_path / "mics/*.mrc"), "pixel_size_a": 1.0})
    assert len(problems) == 1
    assert problems[0].startswith(f"parameter 'pattern': {tmp_path / 'mics/*.mrc'}: none of "
                                  "the 2 matching files is a readable MRC micrograph; the "
                                  f"first: {tmp_path / 'mics/m0.mrc'}: not a readable MRC")
