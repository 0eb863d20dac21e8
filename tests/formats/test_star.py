"""RELION STAR particle files: 3.0 and 3.1+, every column kept, exact round trips."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import starfile

from cryoweave.errors import InputError
from cryoweave.formats import read_particles_star, write_particles_star
from cryoweave.formats.star import format_float

REAL_STARS = ["cryodrgn/relion31.star", "cryodrgn/relion31.6opticsgroups.star",
              "cryodrgn/relion5.star", "cryodrgn/empiar_10076_7.star",
              "cryodrgn/FinalRefinement-OriginalParticles-PfCRT.star",
              "aspire/rln_proj_64.star", "aspire/rln_proj_64_shifted.star",
              "aspire/sample_particles_relion31.star",
              "aspire/sample_relion_symmetry_group_D4.star"]


def test_format_float_is_exact_and_stays_float():
    for value in (200.0, 0.1, 1.322898e5, -128.10516, 1.3099979040033536, 1e-9, 123456789.125):
        text = format_float(value)
        assert float(text) == value and ("." in text or "e" in text)


@pytest.mark.real_data
@pytest.mark.parametrize("name", REAL_STARS)
def test_every_real_star_loads(real_data_dir, name):
    table = read_particles_star(real_data_dir / name)
    assert len(table) > 0
    assert table.particles["image_index"].min() >= 0
    assert set(table.particles["optics_group"]) <= set(table.optics["group_id"])


@pytest.mark.real_data
@pytest.mark.parametrize("name", ["cryodrgn/relion31.6opticsgroups.star", "cryodrgn/relion5.star",
                                  "cryodrgn/relion31.star",
                                  "aspire/sample_particles_relion31.star"])
def test_relion31_round_trip_is_column_for_column_equal(real_data_dir, tmp_path, name):
    source = tmp_path / "in.star"
    shutil.copy(real_data_dir / name, source)
    write_particles_star(read_particles_star(source), tmp_path / "out.star")
    before = starfile.read(source, always_dict=True)
    after = starfile.read(tmp_path / "out.star", always_dict=True)
    assert list(before) == list(after)
    for block in before:
        pd.testing.assert_frame_equal(before[block], after[block])


@pytest.mark.real_data
def test_six_optics_groups_keep_their_pixel_sizes(real_data_dir):
    table = read_particles_star(real_data_dir / "cryodrgn/relion31.6opticsgroups.star")
    assert table.pixel_sizes() == {1: 1.25, 2: 1.24, 3: 1.25, 4: 1.25, 5: 1.24, 6: 1.25}
    assert "rlnEvenZernike" in table.optics and "rlnBeamTiltX" in table.optics
    first = table.particles.iloc[0]
    assert first["image_index"] == 2  # "3@Polish/…" is 1-based
    assert first["shift_x_a"] == pytest.approx(13.284554)
    assert first["rlnClassNumber"] == 1


@pytest.mark.real_data
def test_relion30_pixel_size_and_origins(real_data_dir, tmp_path):
    table = read_particles_star(real_data_dir / "cryodrgn/empiar_10076_7.star")
    assert table.relion_version == "3.0"
    assert table.pixel_sizes()[1] == pytest.approx(5 * 1e4 / 38168)
    assert table.particles["image_path"].iloc[0].endswith("cryodrgn/empiar_10076_7.mrc")


def test_relion30_pixel_origins_become_angstrom_and_back(tmp_path):
    star = tmp_path / "p30.star"
    frame = pd.DataFrame({"rlnImageName": ["1@s.mrcs", "2@s.mrcs"],
                          "rlnOriginX": [2.0, -1.5], "rlnOriginY": [0.5, 3.0],
                          "rlnDetectorPixelSize": [5.0, 5.0], "rlnMagnification": [25000.0] * 2,
                          "rlnVoltage": [300.0, 300.0]})
    starfile.write(frame, star)
    table = read_particles_star(star)
    assert table.pixel_sizes()[1] == pytest.approx(2.0)
    np.testing.assert_allclose(table.particles["shift_x_a"], [4.0, -3.0])
    write_particles_star(table, tmp_path / "p31.star")
    out = starfile.read(tmp_path / "p31.star")
    np.testing.assert_allclose(out["particles"]["rlnOriginXAngst"], [4.0, -3.0])
    write_particles_star(table, tmp_path / "back30.star", version="3.0")
    back = starfile.read(tmp_path / "back30.star")
    np.testing.assert_allclose(back["rlnOriginX"], [2.0, -1.5])
    assert list(back.columns[:3]) == ["rlnImageName", "rlnOriginX", "rlnOriginY"]


def test_missing_image_name_and_unknown_optics_group(tmp_path):
    star = tmp_path / "bad.star"
    starfile.write(pd.DataFrame({"rlnDefocusU": [1.0]}), star)
    with pytest.raises(InputError, match="rlnImageName"):
        read_particles_star(star)
    starfile.write({"optics": pd.DataFrame({"rlnOpticsGroup": [1], "rlnImagePixelSize": [1.0]}),
                    "particles": pd.DataFrame({"rlnImageName": ["1@a.mrcs"],
                                               "rlnOpticsGroup": [2]})}, star, overwrite=True)
    with pytest.raises(InputError, match="row 1, column rlnOpticsGroup: group 2 is not defined"):
        read_particles_star(star)


def test_datadir_and_prefix_resolution(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "stack.mrcs").write_bytes(b"")
    star = tmp_path / "meta" / "p.star"
    star.parent.mkdir()
    starfile.write({"optics": pd.DataFrame({"rlnOpticsGroup": [1], "rlnImagePixelSize": [1.0]}),
                    "particles": pd.DataFrame({"rlnImageName": ["1@/old/place/stack.mrcs"],
                                               "rlnOpticsGroup": [1]})}, star)
    table = read_particles_star(star, datadir=tmp_path / "data", strip_prefix="/old/place/")
    assert table.particles["image_path"].iloc[0] == str(tmp_path / "data" / "stack.mrcs")
    # RELION project-relative paths: found from a parent folder of the STAR file
    nested = tmp_path / "Refine3D" / "job010"
    nested.mkdir(parents=True)
    starfile.write({"optics": pd.DataFrame({"rlnOpticsGroup": [1], "rlnImagePixelSize": [1.0]}),
                    "particles": pd.DataFrame({"rlnImageName": ["000001@data/stack.mrcs"],
                                               "rlnOpticsGroup": [1]})}, nested / "run.star")
    table = read_particles_star(nested / "run.star")
    assert table.particles["image_path"].iloc[0] == str(tmp_path / "data" / "stack.mrcs")
    assert table.image_index_width == 6
