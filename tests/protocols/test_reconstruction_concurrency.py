"""ReconstructFourier runs its two half insertions side by side by default, with the same maps
as one step after the other, and its three gridding solves in threads give the serial maps."""

from __future__ import annotations

import os

import numpy as np
import pytest

from cryoweave.engine import ReconstructionAccumulator, reconstruct_maps
from cryoweave.formats import read_volume
from cryoweave.plugin import registry
from cryoweave.store import VolumeSet
from cryoweave.store.schema import StepRow
from cryoweave.workflow._submit import run_protocol


def _simulate(project_dir):
    _project, summary = run_protocol(project_dir, registry().get("SimulateParticles"),
                                    {"phantom": True, "n_particles": 600, "box_px": 32,
                                     "pixel_size_a": 3.0, "snr": 1.0, "seed": 3})
    assert summary.status == "finished", summary.error
    return summary.run_id


def _reconstruct(project_dir, particles_run, **runner):
    project, summary = run_protocol(project_dir, registry().get("ReconstructFourier"),
                                    {"particles": {"run": particles_run,
                                                   "output": "particles"},
                                     "gridding_iterations": 3}, **runner)
    assert summary.status == "finished", summary.error
    volume = VolumeSet(project, summary.outputs["volume"]).to_frame().iloc[0]
    maps = [read_volume(volume[c])[0] for c in ("half1_path", "half2_path", "path")]
    with project.reader() as s:
        steps = {row.key: (row.started_at, row.finished_at)
                 for row in s.query(StepRow).filter(StepRow.run_id == summary.run_id)}
    return maps, steps


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores to run steps side by side")
def test_halves_overlap_by_default_and_match_the_serial_run(tmp_path):
    particles_run = _simulate(tmp_path / "p")
    serial_maps, serial_steps = _reconstruct(tmp_path / "p", particles_run, workers=1)
    maps, steps = _reconstruct(tmp_path / "p", particles_run)  # defaults, as run-protocol
    (start1, end1), (start2, end2) = steps["insert/half1"], steps["insert/half2"]
    assert start1 < end2 and start2 < end1, f"the halves did not overlap: {steps}"
    finalize_start = steps["finalize"][0]
    assert finalize_start >= max(end1, end2) - 1e-3  # and the finalize waits for both
    # serially, half 2 starts after half 1 is recorded
    assert serial_steps["insert/half2"][0] >= serial_steps["insert/half1"][1] - 1e-3
    for ours, serial in zip(maps, serial_maps, strict=True):
        np.testing.assert_array_equal(ours, serial)


@pytest.mark.parametrize("free_bytes", [0, 1 << 40], ids=["rounds of two", "all three at once"])
def test_gridding_solves_in_threads_equal_the_serial_solves(monkeypatch, free_bytes):
    """Three solves on two threads: all at once when memory allows, else two then one (with
    both FFT threads); with three threads always at once. Every way gives the serial maps,
    the map of both halves given as the pair (summed while folding) or as `acc1 + acc2`."""
    from cryoweave.engine import _reconstruction

    monkeypatch.setattr(_reconstruction, "free_device_memory_bytes", lambda device: free_bytes)
    rng = np.random.default_rng(5)
    box = 24
    images = rng.standard_normal((120, box, box)).astype(np.float32)
    angles = rng.uniform(-np.pi, np.pi, (120, 3))
    matrices = np.stack([_rotation(*a) for a in angles])
    accumulators = []
    for half in (1, 2):
        acc = ReconstructionAccumulator.empty(box, half=half)
        rows = slice(0, 60) if half == 1 else slice(60, 120)
        acc.insert(images[rows], matrices[rows])
        accumulators.append(acc)
    accumulators.append(accumulators[0] + accumulators[1])
    serial = [a.reconstruct(gridding_iterations=4) for a in accumulators]
    items = [[a] for a in accumulators]
    assert _reconstruction._maps_at_once(items, 2) == (3 if free_bytes else 2)
    assert _reconstruction._maps_at_once(items, 3) == 3
    pair = (accumulators[0], accumulators[1])
    for threads, third in ((1, pair), (2, pair), (3, pair), (2, accumulators[2])):
        threaded = reconstruct_maps([*accumulators[:2], third], threads=threads,
                                    gridding_iterations=4)
        for ours, reference in zip(threaded, serial, strict=True):
            scale = float(np.abs(reference).max())
            assert scale > 0
            assert float(np.abs(ours - reference).max()) <= 1e-6 * scale


def _rotation(a: float, b: float, c: float) -> np.ndarray:
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    rz1 = np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1]])
    ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    rz2 = np.array([[cc, -sc, 0], [sc, cc, 0], [0, 0, 1]])
    return rz1 @ ry @ rz2


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores to run steps side by side")
def test_a_workflow_without_workers_lets_the_protocol_run_its_halves_side_by_side(run_cli,
                                                                                  tmp_path):
    """`workflow run` (and the GUI, same runner command) without --workers: the protocol's
    choice, as run-protocol makes it, not one step at a time."""
    import json

    (tmp_path / "wf.json").write_text(json.dumps({"protocols": [
        {"label": "sim", "protocol": "SimulateParticles",
         "params": {"phantom": True, "n_particles": 600, "box_px": 32, "pixel_size_a": 3.0,
                    "snr": 1.0, "seed": 3}},
        {"label": "rec", "protocol": "ReconstructFourier",
         "params": {"particles": {"run": "sim", "output": "particles"},
                    "gridding_iterations": 3}}]}))
    result = run_cli("workflow", "run", "wf.json", "--project", "proj", "--json", timeout=300)
    assert result.returncode == 0, result.stderr
    from cryoweave.store import Project

    with Project.open(tmp_path / "proj") as project, project.reader() as s:
        run_id = json.loads(result.stdout)["runs"]["rec"]
        steps = {row.key: (row.started_at, row.finished_at)
                 for row in s.query(StepRow).filter(StepRow.run_id == run_id)}
    (start1, end1), (start2, end2) = steps["insert/half1"], steps["insert/half2"]
    assert start1 < end2 and start2 < end1, f"the halves did not overlap: {steps}"
