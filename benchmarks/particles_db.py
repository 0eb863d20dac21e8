"""Import and iterate 1,000,000 particles through the project database (SQLite).

Import = the real ``ImportParticles`` protocol on a RELION 3.1 STAR file (parse + checks +
bulk insert, one run); iterate = every particle in batches of 100,000 with all typed columns
and pass-through metadata. Goals (issue 2): import < 60 s, iterate < 20 s on a 2-core machine.

    python benchmarks/particles_db.py [--n 1000000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Section, rate

from cryoweave.demo.synthetic import particle_table
from cryoweave.formats import ParticleTable, write_particles_star
from cryoweave.plugin import registry
from cryoweave.store import ParticleSet
from cryoweave.workflow import run_protocol


def make_star(folder: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    table = particle_table(n, folder / "stack.mrcs", 1.1, 256, rng)
    table.particles["image_path"] = [str(folder / f"stacks/mic_{i // 500:05d}.mrcs")
                                     for i in range(n)]
    table.particles["image_index"] = np.arange(n) % 500
    table.particles["rlnCtfFigureOfMerit"] = rng.uniform(0, 1, n).round(6)
    table.particles["rlnAutopickFigureOfMerit"] = rng.uniform(0, 5, n).round(6)
    star = folder / "particles.star"
    write_particles_star(ParticleTable(table.particles, table.optics), star)
    return star


def measure(n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="cw-bench-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        star = make_star(folder, n)
        write_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        project, summary = run_protocol(folder / "proj", registry().get("ImportParticles"),
                                        {"path": str(star), "check_stacks": False})
        import_s = time.perf_counter() - t0
        assert summary.status == "finished", summary.error
        particles = ParticleSet(project, summary.outputs["particles"])
        t0 = time.perf_counter()
        seen = 0
        checksum = 0.0
        for batch in particles.iter_batches(100_000):
            seen += len(batch)
            checksum += float(batch["defocus_u_a"].sum())
        iterate_s = time.perf_counter() - t0
        assert seen == n
        t0 = time.perf_counter()
        count = particles.query().filter(ParticleSet.fields.half == 1).count()
        filter_s = time.perf_counter() - t0
        project.close()
    return {"n": n, "write_star_s": write_s, "import_s": import_s, "iterate_s": iterate_s,
            "count_filter_s": filter_s, "half1": count}


def run(n: int = 1_000_000) -> Section:
    result = measure(n)
    section = Section(
        f"Project database: {n:,} particles (SQLite)",
        "Import = the real ImportParticles protocol on a RELION 3.1 STAR file (parse, checks, "
        "bulk insert, in one run); iterate = every particle in batches of 100,000 with all "
        "typed columns and pass-through metadata.",
        ["operation", "seconds", "particles/s", "goal"])
    section.rows.append(["import (ImportParticles)", f"{result['import_s']:.1f}",
                         rate(n, result["import_s"]), "< 60 s"])
    section.rows.append(["iterate (100k batches)", f"{result['iterate_s']:.1f}",
                         rate(n, result["iterate_s"]), "< 20 s"])
    section.rows.append(["count with a filter (half == 1)", f"{result['count_filter_s']:.2f}",
                         "", ""])
    return section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = measure(args.n)
    print(f"{result['n']:,} particles: import {result['import_s']:.1f} s (goal < 60), "
          f"iterate {result['iterate_s']:.1f} s (goal < 20), filtered count "
          f"{result['count_filter_s']:.2f} s  [STAR written in {result['write_star_s']:.1f} s]")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
