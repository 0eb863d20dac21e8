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


def _star_31(tmp_path, *, optics_row="1 2.0 300.0 2.7 0.1 16", particle_labels=None,
             rows=None):
    labels = particle_labels or ["rlnImageName", "rlnDefocusU", "rlnAngleRot",
                                 "rlnRandomSubset", "rlnOpticsGroup"]
    rows = rows or ["1@s.mrcs 10000.0 10.0 1 1", "2@s.mrcs 12000.0 20.0 2 1"]
    text = ("data_optics\n\nloop_\n_rlnOpticsGroup\n_rlnImagePixelSize\n_rlnVoltage\n"
            "_rlnSphericalAberration\n_rlnAmplitudeContrast\n_rlnImageSize\n"
            f"{optics_row}\n\ndata_particles\n\nloop_\n"
            + "".join(f"_{label}\n" for label in labels) + "\n".join(rows) + "\n")
    path = tmp_path / "p.star"
    path.write_text(text)
    return path


@pytest.mark.parametrize("row,column,value", [
    ("2@s.mrcs abc 20.0 2 1", "rlnDefocusU", "'abc' is not a number"),
    ("2@s.mrcs 12000.0 xyz 2 1", "rlnAngleRot", "'xyz' is not a number"),
    ("2@s.mrcs 12000.0 20.0 a 1", "rlnRandomSubset", "'a' is not an integer"),
    ("2@s.mrcs 12000.0 20.0 2 1.5", "rlnOpticsGroup", "1.5 is not an integer"),
])
def test_text_in_a_numeric_column_names_file_row_and_column(tmp_path, row, column, value):
    path = _star_31(tmp_path, rows=["1@s.mrcs 10000.0 10.0 1 1", row])
    with pytest.raises(InputError, match=rf"p\.star: data_particles row 2, column {column}: "
                                         rf"{value}"):
        read_particles_star(path)


@pytest.mark.parametrize("optics_row,column,message", [
    ("1 two 300.0 2.7 0.1 16", "rlnImagePixelSize", "'two' is not a number"),
    ("1 -4 300.0 2.7 0.1 16", "rlnImagePixelSize", "-4 is out of range; expected a finite "
                                                   "pixel size with 0.1 ≤ value ≤ 100 Å"),
    ("1 1e400 300.0 2.7 0.1 16", "rlnImagePixelSize", "inf is out of range"),
    ("1 2.0 1e308 2.7 0.1 16", "rlnVoltage", "1e\\+308 is out of range"),
    ("1 2.0 300.0 inf 0.1 16", "rlnSphericalAberration", "inf is out of range"),
    ("1 2.0 300.0 2.7 1.0 16", "rlnAmplitudeContrast", "1 is out of range"),
    ("1 2.0 300.0 2.7 0.1 x", "rlnImageSize", "'x' is not an integer"),
])
def test_optics_values_are_numbers_in_physical_ranges(tmp_path, optics_row, column, message):
    with pytest.raises(InputError, match=rf"p\.star: data_optics row 1, column {column}: "
                                         rf"{message}"):
        read_particles_star(_star_31(tmp_path, optics_row=optics_row))


def test_relion30_magnification_zero_is_refused_not_an_infinite_pixel_size(tmp_path):
    path = tmp_path / "p.star"
    starfile.write(pd.DataFrame({"rlnImageName": ["1@s.mrcs", "2@s.mrcs"],
                                 "rlnDetectorPixelSize": [5.0, 5.0],
                                 "rlnMagnification": [25000.0, 0.0]}), path)
    with pytest.raises(InputError, match=r"row 2, column rlnMagnification: 0 is out of range"):
        read_particles_star(path)


def test_duplicated_labels_missing_optics_group_and_truncated_rows(tmp_path):
    labels = ["rlnImageName", "rlnDefocusU", "rlnDefocusU", "rlnRandomSubset", "rlnOpticsGroup"]
    with pytest.raises(InputError, match=r"data_particles declares the column\(s\) rlnDefocusU "
                                         "more than once"):
        read_particles_star(_star_31(tmp_path, particle_labels=labels))
    with pytest.raises(InputError, match="data_particles row 2 has 3 of the 5 values"):
        read_particles_star(_star_31(tmp_path, rows=["1@s.mrcs 10000.0 10.0 1 1",
                                                     "2@s.mrcs 12000.0 20.0"]))
    path = tmp_path / "q.star"
    starfile.write({"optics": pd.DataFrame({"rlnImagePixelSize": [1.0, 2.0]}),
                    "particles": pd.DataFrame({"rlnImageName": ["1@a.mrcs"]})}, path)
    with pytest.raises(InputError, match=r"q\.star: data_optics lacks the required column "
                                         "rlnOpticsGroup"):
        read_particles_star(path)


def test_an_empty_particle_table_is_read_as_empty_not_a_crash(tmp_path):
    path = _star_31(tmp_path, rows=[""])
    assert len(read_particles_star(path)) == 0
    path.write_text("data_\n\nloop_\n_rlnImageName\n_rlnVoltage\n_rlnMagnification\n")
    assert len(read_particles_star(path)) == 0  # RELION 3.0 layout


def test_relion30_pixel_origins_out_of_range_name_the_file_label(tmp_path):
    path = tmp_path / "p.star"
    starfile.write(pd.DataFrame({"rlnImageName": ["1@s.mrcs"], "rlnDetectorPixelSize": [5.0],
                                 "rlnMagnification": [25000.0], "rlnOriginX": [1e6]}), path)
    with pytest.raises(InputError, match=r"row 1, column rlnOriginX × pixel size: 2e\+06 is out "
                                         "of range"):
        read_particles_star(path)
