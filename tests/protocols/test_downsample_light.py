"""The stand-alone `cryoweave downsample` loads only what it needs: not the workflow runtime,
the project database (SQLAlchemy) or the other protocols; and batches bigger than one pipeline
job give the same stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from cryoweave.demo.synthetic import write_particles
from cryoweave.formats import read_images
from cryoweave.protocols.downsample import _stack, downsample_file

SRC = Path(__file__).resolve().parents[2] / "src"
HEAVY = ("sqlalchemy", "cryoweave.workflow", "cryoweave.workflow.runner", "cryoweave.plugin",
         "cryoweave.protocols.highres", "cryoweave.protocols.downsample.protocol")

SCRIPT = """
import json, sys
from cryoweave.cli import main
sys.argv = ["cryoweave", "downsample", sys.argv[1], "-D", "16", "-o", sys.argv[2]]
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print(json.dumps({"code": code, "heavy": sorted(m for m in %r if m in sys.modules)}))
"""


def test_the_command_imports_no_runtime_nor_database(tmp_path):
    (tmp_path / "data").mkdir()
    star = write_particles(tmp_path / "data", 10, 32, 1.0, np.random.default_rng(1))
    done = subprocess.run([sys.executable, "-c", SCRIPT % (HEAVY,), str(star),
                           str(tmp_path / "out")], capture_output=True, text=True,
                          env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}, check=False)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["code"] == 0, done.stderr
    assert report["heavy"] == [], f"the downsample command imported {report['heavy']}"
    assert read_images(tmp_path / "out" / "particles.16.mrcs").shape == (10, 16, 16)


def test_many_pipeline_jobs_give_the_one_job_stack(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    star = write_particles(tmp_path / "data", 150, 40, 1.0, np.random.default_rng(2))
    monkeypatch.setattr(_stack, "JOB_IMAGES", 1000)
    whole = read_images(downsample_file(star, tmp_path / "one", box_px=20).stack_path)
    monkeypatch.setattr(_stack, "JOB_IMAGES", 7)  # 22 jobs, the last one short
    jobs = read_images(downsample_file(star, tmp_path / "many", box_px=20).stack_path)
    np.testing.assert_array_equal(jobs, whole)


def test_the_stack_does_not_depend_on_the_threads(tmp_path, monkeypatch):
    """1 or 3 CPU threads taking 5-image jobs in any order: the same stack, byte for byte."""
    (tmp_path / "data").mkdir()
    star = write_particles(tmp_path / "data", 53, 36, 1.0, np.random.default_rng(5))
    monkeypatch.setattr(_stack, "JOB_IMAGES", 5)
    one = downsample_file(star, tmp_path / "one", box_px=18, threads=1).stack_path
    three = downsample_file(star, tmp_path / "three", box_px=18, threads=3).stack_path
    np.testing.assert_array_equal(read_images(three), read_images(one))
    assert one.read_bytes()[1024:] == three.read_bytes()[1024:]
