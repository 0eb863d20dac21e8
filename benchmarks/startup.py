"""Start-up time of the light commands (issue 14): ``--help``, ``form``, ``runs``, ``show``.

Each command runs ``repeat`` times as a fresh ``python -m cryoweave.cli`` process on a small
project (one imported 32³ volume); the table gives the median wall time and the heavy modules
the command imported (none of pandas, scipy, mrcfile, starfile; SQLAlchemy only where the
command reads the project database). Goal: < 0.5 s each on an idle machine.

    python benchmarks/startup.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import Section  # noqa: E402

HEAVY = ("pandas", "scipy", "mrcfile", "starfile", "numpy", "sqlalchemy")
PROBE = ("import sys, runpy; sys.argv = ['cryoweave'] + sys.argv[1:]\n"
         "try:\n    runpy.run_module('cryoweave.cli', run_name='__main__')\n"
         "except SystemExit:\n    pass\n"
         f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules), "
         "file=sys.stderr)")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cryoweave.cli", *args], cwd=cwd,
                          capture_output=True, text=True, env=os.environ.copy(), check=True)


def make_project(root: Path) -> Path:
    import numpy as np

    from cryoweave.formats import write_mrc

    write_mrc(root / "map.mrc", np.zeros((32, 32, 32), np.float32), 2.0)
    (root / "import.json").write_text(json.dumps({"path": str(root / "map.mrc")}))
    _cli("run-protocol", "ImportVolume", "import.json", "--project", "proj", cwd=root)
    return root / "proj"


def run(repeat: int = 7) -> Section:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        project = make_project(root)
        commands = [("--help",), ("form", "Downsample"), ("runs", "--project", str(project)),
                    ("show", "1", "--project", str(project)), ("protocols",)]
        for args in commands:
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                _cli(*args, cwd=root)
                times.append(time.perf_counter() - started)
            probe = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=root,
                                   capture_output=True, text=True, check=True)
            heavy = probe.stderr.strip().rpartition("HEAVY=")[2] or "—"
            rows.append([f"`cryoweave {' '.join(a if '/' not in a else 'PROJ' for a in args)}`",
                         f"{statistics.median(times):.2f}", f"{min(times):.2f}",
                         heavy.replace(",", ", ")])
    return Section(
        title="Start-up of the light commands",
        intro=f"Fresh `python -m cryoweave.cli` processes, median and best of {repeat}, on a "
              "project with one imported volume. `protocols` imports every protocol and is "
              "shown for comparison; the others import only what they use (issue 14: "
              "< 0.5 s).",
        header=["command", "median wall (s)", "best (s)", "heavy modules imported"],
        rows=rows,
        notes=["The machine is shared: medians on a loaded machine are above the idle ones; "
               "`python -X importtime -m cryoweave.cli form Downsample` shows what remains."],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    print(run(parser.parse_args().repeat).markdown())


if __name__ == "__main__":
    main()
