"""SimulateParticles and ReconstructFourier, validated against the known truth."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest
import starfile

from cryoweave.engine import fsc
from cryoweave.errors import ParamError
from cryoweave.formats import read_images, read_volume
from cryoweave.plugin import registry
from cryoweave.store import ParticleSet, RecordSet, VolumeSet
from cryoweave.workflow import run_protocol


def simulate(project_dir, **params):
    project, summary = run_protocol(project_dir, registry().get("SimulateParticles"), params)
    assert summary.status == "finished", summary.error
    return project, summary


def reconstruct(project_dir, particles_run, **params):
    project, summary = run_protocol(project_dir, registry().get("ReconstructFourier"),
                                    {"particles": {"run": particles_run,
                                                   "output": "particles"}, **params},
                                    workers=2)
    assert summary.status == "finished", summary.error
    return project, summary


def fsc_vs_truth(project, reconstruction, simulation):
    volume = VolumeSet(project, reconstruction.outputs["volume"]).to_frame().iloc[0]
    truth = VolumeSet(project, simulation.outputs["truth"]).to_frame().iloc[0]
    ours, pixel = read_volume(volume["path"])
    return fsc(ours, read_volume(truth["path"])[0], pixel_size_a=pixel)


def up_to_half_nyquist(curve):
    box = len(curve.values) * 2 - 2
    return curve.values[1: box // 4 + 1]


def test_simulation_is_deterministic_and_writes_the_truth(tmp_path):
    params = {"phantom": True, "n_particles": 50, "box_px": 32, "pixel_size_a": 3.0,
              "snr": 0.5, "max_shift_a": 6.0, "seed": 7}
    project, first = simulate(tmp_path / "a", **params)
    _, _second = simulate(tmp_path / "b", **params)
    _, _other = simulate(tmp_path / "c", **{**params, "seed": 8})
    stack = "Runs/000001_SimulateParticles/extra/particles.mrcs"
    star_name = "Runs/000001_SimulateParticles/extra/particles.star"
    # (the MRC header holds a time stamp: compare the images and the metadata)
    np.testing.assert_array_equal(read_images(tmp_path / "a" / stack),
                                  read_images(tmp_path / "b" / stack))
    assert not np.array_equal(read_images(tmp_path / "a" / stack),
                              read_images(tmp_path / "c" / stack))
    assert starfile.read(tmp_path / "a" / star_name)["particles"].equals(
        starfile.read(tmp_path / "b" / star_name)["particles"])
    star = starfile.read(tmp_path / "a/Runs/000001_SimulateParticles/extra/particles.star")
    columns = set(star["particles"].columns)
    assert {"rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst",
            "rlnOriginYAngst", "rlnDefocusU", "rlnRandomSubset"} <= columns
    shifts = np.hypot(star["particles"]["rlnOriginXAngst"], star["particles"]["rlnOriginYAngst"])
    assert shifts.max() <= 6.0 and set(star["particles"]["rlnRandomSubset"]) == {1, 2}
    assert star["optics"]["rlnImagePixelSize"].iloc[0] == 3.0
    particles = ParticleSet(project, first.outputs["particles"])
    assert particles.properties["has_poses"] and particles.count() == 50
    sigma = particles.properties["simulation"]["noise_sigma"]
    noise_free = {**params, "snr": None}
    _, _clean = simulate(tmp_path / "d", **noise_free)
    images = read_images(tmp_path / "a" / stack)
    clean_images = read_images(tmp_path / "d" / stack)
    assert np.std(images - clean_images) == pytest.approx(sigma, rel=0.02)
    assert np.mean(np.var(clean_images, axis=(1, 2))) / sigma**2 == pytest.approx(0.5, rel=0.05)


def test_reconstruction_of_the_phantom_recovers_the_truth(tmp_path):
    project, simulation = simulate(tmp_path / "p", phantom=True, n_particles=3000, box_px=48,
                                   pixel_size_a=2.5, snr=1.0, max_shift_a=5.0, seed=1)
    project, result = reconstruct(tmp_path / "p", simulation.run_id)
    curve = fsc_vs_truth(project, result, simulation)
    assert up_to_half_nyquist(curve).min() >= 0.9
    record = RecordSet(project, result.outputs["fsc"]).to_frame().iloc[0]["data"]
    resolution = record["resolutions_a"]["fsc0143_interpolated"]
    assert 2 * 2.5 <= resolution < 4 * 2.5  # between Nyquist and half Nyquist at SNR 1
    assert record["resolutions_a"]["fsc05_interpolated"] > resolution
    volume = VolumeSet(project, result.outputs["volume"]).to_frame().iloc[0]
    for column in ("path", "half1_path", "half2_path"):
        assert read_volume(volume[column])[0].shape == (48, 48, 48)
    for name in ("fsc.png", "slices.png", "projections.png", "map_filtered.mrc"):
        assert (tmp_path / "p" / "Runs/000002_ReconstructFourier/extra" / name).exists()
    for name in ("slices.png", "projections.png"):  # three titled panels of ≥ 256 px each
        picture = matplotlib.image.imread(tmp_path / "p/Runs/000002_ReconstructFourier/extra"
                                          / name)
        assert picture.shape[0] >= 256 and picture.shape[1] >= 3 * 256


def test_noise_lowers_the_fsc_as_expected(tmp_path):
    quality = {}
    for snr in (None, 1.0, 0.1):
        folder = tmp_path / f"snr{snr}"
        project, simulation = simulate(folder, phantom=True, n_particles=1500, box_px=40,
                                       pixel_size_a=3.0, snr=snr, seed=2)
        project, result = reconstruct(folder, simulation.run_id)
        curve = fsc_vs_truth(project, result, simulation)
        quality[snr] = float(np.mean(up_to_half_nyquist(curve)))
    assert quality[None] > 0.99  # noiseless: only interpolation and CTF zeros limit it
    assert quality[None] > quality[1.0] > quality[0.1]


def test_symmetry_imposed_matches_the_truth_and_c1_is_noisier(tmp_path):
    project, simulation = simulate(tmp_path / "p", phantom=True, symmetry="d7",
                                   n_particles=1500, box_px=40, pixel_size_a=3.0, snr=1.0,
                                   seed=3)
    project, with_d7 = reconstruct(tmp_path / "p", simulation.run_id, symmetry="d7")
    project, with_c1 = reconstruct(tmp_path / "p", simulation.run_id, symmetry="c1")
    curve_d7 = fsc_vs_truth(project, with_d7, simulation)
    curve_c1 = fsc_vs_truth(project, with_c1, simulation)
    assert up_to_half_nyquist(curve_d7).min() >= 0.9
    box = 40
    assert curve_c1.values[1:box // 8 + 1].min() >= 0.95  # c1: the same map at low resolution
    # … with more noise beyond (14× fewer views): a worse resolution against the truth
    assert curve_d7.resolution_a(0.5) < 0.95 * curve_c1.resolution_a(0.5)


@pytest.mark.real_data
def test_ribosome_odd_box_without_header_pixel_size(real_data_dir, tmp_path):
    map_path = str(real_data_dir / "aspire/clean70SRibosome_vol_65p.mrc")
    project, _imported = run_protocol(tmp_path / "p", registry().get("ImportVolume"),
                                     {"path": map_path, "pixel_size_a": 4.0})
    project, simulation = simulate(tmp_path / "p", volume={"run": 1, "output": "volume"},
                                   n_particles=8000, snr=1.0, max_shift_a=4.0, seed=4)
    assert ParticleSet(project, simulation.outputs["particles"]).properties["box_px"] == 65
    project, result = reconstruct(tmp_path / "p", simulation.run_id)
    assert up_to_half_nyquist(fsc_vs_truth(project, result, simulation)).min() >= 0.9


def test_halves_and_validation(tmp_path):
    project, simulation = simulate(tmp_path / "p", phantom=True, n_particles=40, box_px=24,
                                   pixel_size_a=4.0, seed=5)
    _, result = reconstruct(tmp_path / "p", simulation.run_id, halves="random", seed=1)
    with project.reader() as s:
        from cryoweave.store.schema import StepRow

        counts = {r.key: r.result["particles"] for r in
                  s.query(StepRow).filter_by(run_id=result.run_id) if r.key.startswith("ins")}
    assert counts == {"insert/half1": 20, "insert/half2": 20}
    with pytest.raises(ParamError, match="symmetry 'x9'"):
        reconstruct(tmp_path / "p", simulation.run_id, symmetry="x9")
    _, imported = run_protocol(tmp_path / "p", registry().get("ImportParticles"),
                               {"path": str(tmp_path / "p/Runs/000001_SimulateParticles/extra/"
                                                        "particles.mrcs"), "pixel_size_a": 4.0})
    with pytest.raises(ParamError, match="no poses"):
        reconstruct(tmp_path / "p", imported.run_id)


@pytest.mark.parametrize("protocol", ["SimulateParticles", "ReconstructFourier",
                                      "ReconstructHighRes"])
@pytest.mark.parametrize(("symmetry", "expected"), [
    ("c20000", "above the limit of 100 for c<n> and d<n>"),
    ("c999999999999999999999999999999", "above the limit of 100"),
    ("c 2", "not a supported point group"),
    ("c2v", "mirrors or an inversion"),
])
def test_every_protocol_refuses_bad_symmetry_before_creating_anything(tmp_path, protocol,
                                                                       symmetry, expected):
    from cryoweave.workflow import validate_run

    params = {"phantom": True} if protocol == "SimulateParticles" else {
        "particles": str(tmp_path / "missing.star")}
    with pytest.raises(ParamError) as info:
        validate_run(None, registry().get(protocol), {**params, "symmetry": symmetry})
    assert f"parameter 'symmetry': symmetry {symmetry!r}" in str(info.value)
    assert expected in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_a_low_passed_map_reports_the_filter_not_nyquist(tmp_path):
    """max_resolution_a cuts both halves at the same radius: their FSC stays high beyond it
    (shared interpolation leakage), which is no information. The resolution is the cut-off,
    said to be limited by it; the truth confirms nothing finer is in the map."""
    project, simulation = simulate(tmp_path / "p", phantom=True, n_particles=600, box_px=32,
                                   pixel_size_a=3.0, snr=1.0, max_shift_a=3.0, seed=3)
    project, result = reconstruct(tmp_path / "p", simulation.run_id, max_resolution_a=20.0)
    record = RecordSet(project, result.outputs["fsc"]).to_frame().iloc[0]["data"]
    volume = VolumeSet(project, result.outputs["volume"])
    assert all(value >= 20.0 for value in record["resolutions_a"].values()), record
    assert record["resolutions_a"]["fsc0143_interpolated"] == pytest.approx(20.0)
    assert record["resolution_limited_by"]["fsc0143"] == "filter"
    assert volume.properties["resolution_a"] == pytest.approx(20.0)
    assert volume.properties["resolution_limited_by"] == "filter"
    frequency, values = np.asarray(record["frequency_per_a"]), np.asarray(record["fsc"])
    assert np.all(values[frequency > 1 / 20.0] == 0)
    beyond = frequency > 1.1 / 20.0  # past the shell the cut-off falls in
    halves = [read_volume(volume.to_frame().iloc[0][f"half{h}_path"])[0] for h in (1, 2)]
    bare = fsc(*halves, pixel_size_a=3.0)
    assert np.all(bare.values[beyond] > 0.5)  # what the bare half-map FSC would claim
    vs_truth = fsc_vs_truth(project, result, simulation)
    assert np.all(vs_truth.values[beyond] < 0.5)  # the truth: no such signal there
    log = (tmp_path / "p" / project.get_run(result.run_id).folder / "logs").glob("*")
    assert any("limited by the 20.00 Å filter" in path.read_text() for path in log)
