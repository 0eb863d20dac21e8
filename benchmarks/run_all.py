"""Run every side-by-side benchmark and write docs/benchmarks.md.

    python benchmarks/run_all.py [--only NAME ...] [--quick]

Each benchmark module has ``run(...) -> Section | list[Section]``; sections whose module is
not selected keep their previous text in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import machine, relion_version  # noqa: E402

OUTPUT = HERE.parent / "docs" / "benchmarks.md"
# module name -> (full kwargs, quick kwargs)
BENCHMARKS: dict[str, tuple[dict, dict]] = {
    "particles_db": ({"n": 1_000_000}, {"n": 100_000}),
    "downsample": ({"n": 5000, "repeats": 5}, {"n": 1000}),
    "preprocess": ({"repeat": 3}, {"repeat": 1, "tv_iterations": 1, "relion": False}),
    "reconstruct": ({"n": 10000, "repeats": 5}, {"n": 1000, "box_px": 64}),
    "alignment": ({"n": 3000}, {"n": 300}),
    "refine": ({"n": 3000}, {"n": 500}),
    "gui": ({"runs": 200, "n": 1_000_000}, {"runs": 50, "n": 100_000, "idle_s": 5.0}),
    "startup": ({"repeat": 7}, {"repeat": 3}),
}
MARK = "<!-- benchmark:{} -->"
# sections another script writes (benchmarks/gpu.py on a lent GPU machine): kept as they are
KEPT = ("gpu",)


def _sections(text: str) -> dict[str, str]:
    found = {}
    for name in (*BENCHMARKS, *KEPT):
        match = re.search(re.escape(MARK.format(name)) + r"\n(.*?)(?=<!-- benchmark:|\Z)", text,
                          re.S)
        if match:
            found[name] = match.group(1).rstrip() + "\n"
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS))
    parser.add_argument("--quick", action="store_true", help="smaller sizes (smoke test)")
    args = parser.parse_args()
    previous = _sections(OUTPUT.read_text()) if OUTPUT.exists() else {}
    selected = args.only or list(BENCHMARKS)
    results = dict(previous)
    for name in selected:
        kwargs = BENCHMARKS[name][1 if args.quick else 0]
        print(f"running {name} {kwargs} …", flush=True)
        started = time.perf_counter()
        output = importlib.import_module(name).run(**kwargs)
        sections = output if isinstance(output, list) else [output]
        stamp = f"_measured {datetime.date.today().isoformat()} by `python benchmarks/" \
                f"run_all.py --only {name}`{' --quick' if args.quick else ''}, " \
                f"{time.perf_counter() - started:.0f} s_\n\n"
        results[name] = stamp + "\n".join(s.markdown() for s in sections)
        print(results[name])
    header = ["# Benchmarks", "",
              "Side by side with the peers on the same data, in one run per section. Rerun "
              "with `make bench` (all) or `python benchmarks/run_all.py --only NAME`.", "",
              f"- machine: {machine()}",
              f"- peers: {relion_version() or 'RELION not installed'}", ""]
    body = [MARK.format(name) + "\n" + results[name] for name in (*BENCHMARKS, *KEPT)
            if name in results]
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text("\n".join(header) + "\n" + "\n".join(body))
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
