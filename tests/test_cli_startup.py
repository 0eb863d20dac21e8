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


def test_runs_reads_the_database_without_pandas(tmp_path):
    write_mrc(tmp_path / "map.mrc", np.zeros((16, 16, 16), np.float32), 2.0)
    project, _ = run_protocol(tmp_path / "proj", registry().get("ImportVolume"),
                              {"path": str(tmp_path / "map.mrc")}, label="start")
    project.close()
    code, modules = imported("runs", "--project", str(tmp_path / "proj"))
    assert code == 0
    assert "sqlalchemy" in modules
    assert modules.isdisjoint(NEVER), modules & set(NEVER)
    code, modules = imported("show", "1", "--project", str(tmp_path / "proj"))
    assert code == 0
    # the summary loads the run's protocol module (numpy, mrcfile for its header reader), but
    # neither pandas, starfile nor scipy: those load when a step or a reader needs them
    assert modules.isdisjoint(["pandas", "starfile", "scipy", "cryoweave.engine"]), modules


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
