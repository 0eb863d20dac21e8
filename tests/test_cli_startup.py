"""Light commands import only what they use (issue 14: they start in < 0.5 s).

Timing is left to ``benchmarks/startup.py``; here a fresh interpreter runs the command and
reports which heavy modules it imported.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from cryoweave.formats import write_mrc
from cryoweave.plugin import registry
from cryoweave.workflow import run_protocol

NEVER = ["pandas", "scipy", "mrcfile", "starfile", "numpy", "cryoweave.engine"]
PROBE = """
import json, sys
sys.argv = ["cryoweave"] + sys.argv[1:]
from cryoweave.cli import main
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def imported(*args: str) -> tuple[int, set[str]]:
    result = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True,
                            text=True, check=True)
    report = json.loads(result.stderr.strip().splitlines()[-1])
    return report["code"], set(report["modules"])


@pytest.mark.parametrize("args", [["--help"], ["form", "Downsample"]])
def test_help_and_form_import_neither_data_libraries_nor_sqlalchemy(args):
    code, modules = imported(*args)
    assert code == 0
    assert modules.isdisjoint([*NEVER, "sqlalchemy"]), modules & {*NEVER, "sqlalchemy"}
    if args[0] == "form":  # only the asked protocol is imported, not the others
        assert "cryoweave.protocols.downsample.protocol" in modules
        assert "cryoweave.protocols.highres" not in modules


# what `runs` and `show` read through: SQLAlchemy Core, not the ORM, the plugin layer (pydantic)
# or a protocol module (the summary of a finished run is stored in the database)
NOT_FOR_READING = [*NEVER, "sqlalchemy.orm", "pydantic", "cryoweave.plugin", "alembic"]


def test_runs_and_show_read_the_database_with_core_only(tmp_path):
    write_mrc(tmp_path / "map.mrc", np.zeros((16, 16, 16), np.float32), 2.0)
    project, _ = run_protocol(tmp_path / "proj", registry().get("ImportVolume"),
                              {"path": str(tmp_path / "map.mrc")}, label="start")
    project.close()
    for args in (["runs"], ["runs", "--json"], ["show", "1"], ["show", "start", "--json"]):
        code, modules = imported(*args, "--project", str(tmp_path / "proj"))
        assert code == 0, args
        assert "sqlalchemy" in modules
        assert modules.isdisjoint(NOT_FOR_READING), (args, modules & set(NOT_FOR_READING))


def test_show_reads_the_stored_summary_and_computes_one_when_none_is_stored(tmp_path):
    """A finished run's summary is stored when it finishes; a run from before (summary
    NULL) still shows one, computed from its outputs (importing the protocol)."""
    from sqlalchemy import update

    from cryoweave.store import Project, tables

    write_mrc(tmp_path / "map.mrc", np.zeros((16, 16, 16), np.float32), 2.0)
    project, _ = run_protocol(tmp_path / "proj", registry().get("ImportVolume"),
                              {"path": str(tmp_path / "map.mrc")})
    project.close()
    expected = {"volumes": 1, "pixel_size_a": 2.0, "box_px": 16}

    def shown() -> tuple[dict, set[str]]:
        result = subprocess.run([sys.executable, "-c", PROBE, "show", "1", "--json",
                                 "--project", str(tmp_path / "proj")], capture_output=True,
                                text=True, check=True)
        report = json.loads(result.stderr.strip().splitlines()[-1])
        return json.loads(result.stdout)["summary"], set(report["modules"])

    with Project.open(tmp_path / "proj") as project, project.snapshot() as conn:
        stored = conn.execute(tables.runs.select()).one().summary
    assert stored == expected
    summary_now, modules = shown()
    assert summary_now == expected
    assert "cryoweave.plugin" not in modules  # read, not computed
    with Project.open(tmp_path / "proj") as project, project.engine.begin() as conn:
        conn.execute(update(tables.runs).values(summary=None))
    summary_now, modules = shown()
    assert summary_now == expected
    assert "cryoweave.plugin" in modules  # computed by the protocol


@pytest.mark.parametrize("name", ["ImportParticles", "ImportMicrographs", "ImportVolume",
                                  "Downsample", "PreprocessMicrographs", "SimulateParticles",
                                  "ReconstructFourier", "ReconstructHighRes", "ProcessVolume"])
def test_protocol_modules_load_without_pandas_or_starfile(name):
    probe = ("import sys, json; from cryoweave.plugin import registry; "
             f"registry().get({name!r}); "
             "print(json.dumps(sorted(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True)
    modules = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert modules.isdisjoint(["pandas", "starfile", "scipy"]), modules & {"pandas", "starfile",
                                                                           "scipy"}


def test_downsample_loads_pandas_without_pyarrow_and_writes_the_same_files(tmp_path):
    """cryoweave never uses pyarrow: `cryoweave downsample` keeps pandas from loading it
    (0.17 s of 1.35 s, `benchmarks/compare_trees.py`). The pixels equal the engine's in this
    process, where pandas has pyarrow, and the STAR rows point at them in order."""
    from cryoweave.demo.synthetic import write_particles
    from cryoweave.engine import fourier_crop
    from cryoweave.formats import read_images, read_particles

    star = write_particles(tmp_path, 12, 32, 1.0, np.random.default_rng(5))
    out = tmp_path / "out"
    code, modules = imported("downsample", str(star), "-D", "16", "-o", str(out))
    assert code == 0
    assert "pandas" in modules and "starfile" in modules
    assert not any(m.startswith("pyarrow.") for m in modules), \
        sorted(m for m in modules if m.startswith("pyarrow"))
    # nor SciPy (its FFT module is loaded by path: `import scipy` took 54 ms), nor the GUI's
    # browser launcher, nor Numba (the engine's compiled trilinear kernels: not for cropping),
    # nor rich when nothing is a terminal (no bar; the result lines are plain text)
    absent = {"scipy", "webbrowser", "numba", "rich"}
    assert modules.isdisjoint(absent), modules & absent
    expected = fourier_crop(read_images(tmp_path / "particles.mrcs"), 16)
    assert np.array_equal(read_images(out / "particles.16.mrcs"), expected)
    written = read_particles(out / "particles.16.star")
    assert written.particles["image_index"].tolist() == list(range(12))
    assert set(written.particles["image_path"]) == {str((out / "particles.16.mrcs").resolve())}


def test_keeping_pyarrow_out_changes_nothing_once_pandas_is_loaded():
    import pandas  # noqa: F401 - loaded, as in the GUI or a test process

    from cryoweave.cli._tools import _keep_pyarrow_out

    before = sys.modules.get("pyarrow", "absent")
    _keep_pyarrow_out()
    assert sys.modules.get("pyarrow", "absent") is before
