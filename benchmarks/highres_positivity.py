"""Is each `make validate` case a non-negative density? (issue 9: positivity, the references'
negative values set to zero, is applied only to a reference with less than 25 % of its mass
negative: protocols/highres/_references.py).

For `highres_map_loss.py` projects, prints the truth's negative mass fraction (sum of |v| over
v < 0 / sum of |v|, inside the references' soft sphere) unfiltered and low-passed to 12, 20
and 30 Å, and the fractions each iteration of the project's last ReconstructHighRes run
recorded for its two references (``reference_positivity`` in ``result.json``).

    python benchmarks/highres_positivity.py /tmp/cw-map-loss-{phantom,phantom-d7,ribosome}-3000/p

Measured 2026-11-29 on the projects of 2026-11-28/29 (truth unfiltered / 12 / 20 / 30 Å;
the iterations' references): phantom 0.000 / 0.068 / 0.074 / 0.076, phantom-d7 0.000 /
0.067 / 0.052 / 0.040, ribosome 0.469 / 0.469 / 0.469 / 0.465; the references of a phantom
refinement 0.059–0.094 (positivity applied), of a ribosome refinement 0.465–0.472 (not).
The ribosome's refinement with positivity gave 17.511 Å at FSC 0.5 against the truth, without
it 17.430 (true poses 17.267; benchmarks/highres_variants.py, `{"next_positivity": false}`);
the phantom's 7.720 with it, 7.733 without (true poses 7.649).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from cryoweave.engine import lowpass_filter_a, soft_sphere_mask
from cryoweave.formats import read_volume
from cryoweave.protocols.highres._references import ReferenceOptions, negative_mass_fraction
from cryoweave.store import Project


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("projects", type=Path, nargs="+",
                        help="projects made by benchmarks/highres_map_loss.py")
    args = parser.parse_args()
    for project_dir in args.projects:
        facts = json.loads((project_dir / "map_loss.json").read_text())
        truth, pixel = read_volume(facts["truth"])
        box = truth.shape[0]
        edge = ReferenceOptions().edge_width_px  # the references' default sphere
        sphere = soft_sphere_mask(box, box / 2 - edge, edge_width_px=edge)
        fractions = [negative_mass_fraction(truth * sphere)] + [
            negative_mass_fraction(np.asarray(lowpass_filter_a(truth, res, pixel)) * sphere)
            for res in (12.0, 20.0, 30.0)]
        print(f"{facts['case']}: truth {' / '.join(f'{f:.3f}' for f in fractions)} "
              "(unfiltered / 12 / 20 / 30 Å)")
        project = Project.open(project_dir)
        refinements = [r for r in project.list_runs()
                       if r.protocol.endswith("ReconstructHighRes") and r.status == "finished"]
        if not refinements:
            continue
        extra = project_dir / refinements[-1].folder / "extra"
        for folder in sorted(extra.glob("iter_*")):
            record = json.loads((folder / "result.json").read_text())
            halves = record.get("reference_positivity", {})
            described = ", ".join(f"{h} {v['negative_mass_fraction']:.3f} "
                                  f"({'applied' if v['applied'] else 'not applied'})"
                                  for h, v in halves.items())
            print(f"  run {refinements[-1].id} iteration {record['iteration']}: "
                  f"{described or '(not recorded)'}")


if __name__ == "__main__":
    main()
