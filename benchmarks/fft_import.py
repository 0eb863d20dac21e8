"""What loading the CPU FFTs costs a command: ``import scipy.fft`` against the engine's direct
load of SciPy's compiled pocketfft (`cryoweave.engine._fft._compiled_pocketfft`).

Each variant is a fresh ``python -c`` process, alternating, median of ``--repeat`` runs; the
start of Python and NumPy is measured alone and subtracted.

    python benchmarks/fft_import.py [--repeat 9]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

VARIANTS = {
    "python + numpy (subtracted)": "import numpy",
    "import scipy.fft": "import numpy, scipy.fft",
    "engine: compiled pocketfft only": ("import numpy; from cryoweave.engine._fft import "
                                        "_compiled_pocketfft as c; assert c() is not None"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    repeat = parser.parse_args().repeat
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(repeat):
        for name, code in VARIANTS.items():
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            times[name].append(time.perf_counter() - started)
    base = statistics.median(times["python + numpy (subtracted)"])
    print(f"median of {repeat} fresh processes each; python + numpy: {base:.3f} s\n")
    print("| variant | seconds on top of python + numpy |")
    print("|---|---|")
    for name in list(VARIANTS)[1:]:
        print(f"| {name} | {statistics.median(times[name]) - base:.3f} |")


if __name__ == "__main__":
    main()
