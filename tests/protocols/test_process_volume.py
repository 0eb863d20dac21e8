"""ProcessVolume: each option against a reference or an invariant, and the protocol's runs."""

from __future__ import annotations

import numpy as np
import pytest

from cryoweave.engine import atoms_phantom
from cryoweave.errors import ParamError
from cryoweave.formats import read_info, read_volume, write_mrc
from cryoweave.plugin import registry
from cryoweave.protocols.process_volume import ProcessVolume, process_map
from cryoweave.store import VolumeSet
from cryoweave.workflow import run_protocol

PIXEL = 2.0
N = 32


@pytest.fixture(scope="module")
def phantom():
    return atoms_phantom(N, PIXEL, n_atoms=40, seed=5)


def _power_by_radius(volume):
    """|F|² and the Fourier radius (px) of each rfftn coefficient."""
    n = volume.shape[0]
    spectrum = np.fft.rfftn(volume.astype(np.float64))
    kz, ky = np.fft.fftfreq(n) * n, np.fft.fftfreq(n) * n
    kx = np.fft.rfftfreq(n) * n
    radius = np.sqrt(kz[:, None, None] ** 2 + ky[None, :, None] ** 2 + kx[None, None, :] ** 2)
    return spectrum, radius


def test_lowpass_removes_power_beyond_the_cutoff_and_keeps_it_below(phantom):
    out, pixel, _ = process_map(phantom, PIXEL, {"lowpass_resolution_a": 8.0,
                                                 "lowpass_edge_width_px": 2.0})
    before, radius = _power_by_radius(phantom)
    after, _ = _power_by_radius(out)
    cutoff_px = N * PIXEL / 8.0  # 8 Fourier px; the edge spans 7–9
    assert pixel == PIXEL
    assert np.abs(after[radius >= cutoff_px + 1]).max() < 1e-6 * np.abs(before).max()
    below = radius <= cutoff_px - 1
    np.testing.assert_allclose(after[below], before[below], atol=1e-4 * np.abs(before).max())


@pytest.mark.parametrize("bfactor", [-100.0, 300.0])
def test_bfactor_scales_amplitudes_by_exp_minus_b_s2_over_4(phantom, bfactor):
    out, _, _ = process_map(phantom, PIXEL, {"bfactor_a2": bfactor})
    before, radius = _power_by_radius(phantom)
    after, _ = _power_by_radius(out)
    s = radius / (N * PIXEL)  # 1/Å
    strong = np.abs(before) > 1e-3 * np.abs(before).max()
    ratio = np.abs(after[strong]) / np.abs(before[strong])
    np.testing.assert_allclose(ratio, np.exp(-bfactor * s[strong] ** 2 / 4), rtol=1e-4)


def test_resample_round_trip_and_pixel_bookkeeping(phantom):
    up, pixel_up, _ = process_map(phantom, PIXEL, {"pixel_size_a": 1.0})
    assert up.shape == (64,) * 3 and pixel_up == 1.0
    back, pixel_back, _ = process_map(up, pixel_up, {"pixel_size_a": 2.0})
    assert pixel_back == PIXEL
    np.testing.assert_allclose(back, phantom, atol=1e-5 * np.abs(phantom).max())
    assert abs(up.mean() - phantom.mean()) < 1e-5 * np.abs(phantom).max()
    # a non-integer factor: the pixel size follows the real output size, N·p/size
    odd, pixel_odd, _ = process_map(phantom, PIXEL, {"pixel_size_a": 2.7})
    assert odd.shape[0] == round(N * PIXEL / 2.7) == 24
    assert pixel_odd == pytest.approx(N * PIXEL / 24)
    boxed, pixel_boxed, _ = process_map(phantom, PIXEL, {"box_px": 48})
    assert boxed.shape == (48,) * 3 and pixel_boxed == PIXEL
    np.testing.assert_array_equal(boxed[8:40, 8:40, 8:40], phantom)


def test_sphere_mask_values(phantom):
    out, _, _ = process_map(np.ones_like(phantom), PIXEL,
                            {"sphere_radius_a": 16.0, "sphere_edge_width_a": 8.0})
    axis = np.arange(N) - N // 2
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    distance_a = np.sqrt(x**2 + y**2 + z**2) * PIXEL
    assert out.min() >= 0 and out.max() <= 1
    assert (out[distance_a <= 16] == 1).all() and (out[distance_a >= 24] == 0).all()
    edge = (distance_a > 16) & (distance_a < 24)
    assert np.all(np.diff(np.sort(out[edge])) >= 0) and 0 < out[edge].min() < out[edge].max() < 1


def test_threshold_mask_output_or_applied_and_normalise(phantom):
    settings = {"mask_threshold": 0.2 * phantom.max(), "mask_dilation_a": 4.0,
                "mask_edge_width_a": 6.0, "mask_mode": "output"}
    out, _, mask = process_map(phantom, PIXEL, settings)
    np.testing.assert_array_equal(out, phantom)
    assert mask.min() == 0 and mask.max() == 1
    assert (mask[phantom > settings["mask_threshold"]] == 1).all()
    applied, _, _ = process_map(phantom, PIXEL, {**settings, "mask_mode": "apply"})
    np.testing.assert_allclose(applied, phantom * mask, atol=1e-7)
    normalised, _, _ = process_map(phantom, PIXEL, {"normalize": "whole"})
    assert abs(normalised.mean()) < 1e-5 and abs(normalised.std() - 1) < 1e-4


def test_order_symmetrise_flip_then_lowpass(phantom):
    """Steps run in the documented order: resample → symmetrise → flip → low-pass → …"""
    from cryoweave.engine import flip_hand, lowpass_filter_a, symmetrize_volume

    out, _, _ = process_map(phantom, PIXEL, {"symmetry": "c2", "flip_hand": True,
                                             "lowpass_resolution_a": 10.0})
    expected = lowpass_filter_a(flip_hand(symmetrize_volume(phantom, "c2")), 10.0, PIXEL)
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_params_are_checked():
    with pytest.raises(ValueError, match="no operation"):
        ProcessVolume.Params(volume="map.mrc")
    for bad in ({"pixel_size_a": 0.0}, {"bfactor_a2": 1e5}, {"lowpass_resolution_a": 1e4},
                {"symmetry": "q7"}, {"box_px": 4}):
        with pytest.raises(ValueError):
            ProcessVolume.Params(volume="map.mrc", **bad)


def test_protocol_from_a_path_then_by_reference(tmp_path, phantom):
    """A path input is imported implicitly; a second run takes the first's output by label;
    the MRC headers carry the pixel sizes; the threshold mask is the second output."""
    write_mrc(tmp_path / "map.mrc", phantom, PIXEL)
    protocol = registry().get("ProcessVolume")
    project_dir = tmp_path / "p"
    project, summary = run_protocol(project_dir, protocol,
                                    {"volume": str(tmp_path / "map.mrc"), "pixel_size_a": 1.0,
                                     "mask_threshold": float(0.2 * phantom.max())},
                                    label="up")
    assert summary.status == "finished", summary.error
    volume = VolumeSet(project, summary.outputs["volume"])
    row = volume.to_frame().iloc[0]
    assert volume.properties == {"pixel_size_a": 1.0, "box_px": 64}
    assert read_info(row["path"]).voxel_size_a == pytest.approx(1.0)
    mask = VolumeSet(project, summary.outputs["mask"]).to_frame().iloc[0]
    mask_map, mask_pixel = read_volume(mask["path"])
    assert mask_pixel == pytest.approx(1.0) and mask_map.min() >= 0 and mask_map.max() == 1
    project.close()
    project, summary = run_protocol(project_dir, protocol,
                                    {"volume": {"run": "up", "output": "volume"},
                                     "pixel_size_a": 2.0, "lowpass_resolution_a": 1000.0,
                                     "lowpass_edge_width_px": 0.0})
    assert summary.status == "finished", summary.error
    path = VolumeSet(project, summary.outputs["volume"]).to_frame().iloc[0]["path"]
    back, pixel = read_volume(path)
    assert pixel == pytest.approx(PIXEL)
    # low-pass at 1000 Å with no edge keeps only the DC: the mean survives the round trip
    np.testing.assert_allclose(back, phantom.mean(), atol=1e-5 * np.abs(phantom).max())
    project.close()


def test_lowpass_beyond_nyquist_is_refused(tmp_path, phantom):
    write_mrc(tmp_path / "map.mrc", phantom, PIXEL)
    protocol = registry().get("ProcessVolume")
    # a path: the map's header is read before anything is created, and refused the same way
    with pytest.raises(ParamError, match=r"Nyquist \(4 Å"):
        run_protocol(tmp_path / "p", protocol, {"volume": str(tmp_path / "map.mrc"),
                                                "lowpass_resolution_a": 3.0}, label="a")
    assert not (tmp_path / "p" / "Runs").exists() or not any((tmp_path / "p" / "Runs").iterdir())
    # a reference: refused before anything is created
    project, _ = run_protocol(tmp_path / "p", registry().get("ImportVolume"),
                              {"path": str(tmp_path / "map.mrc")}, label="a")
    project.close()
    with pytest.raises(ParamError, match="Nyquist"):
        run_protocol(tmp_path / "p", protocol, {"volume": {"run": "a", "output": "volume"},
                                                "lowpass_resolution_a": 3.0})
