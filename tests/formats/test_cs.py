"""cryoSPARC .cs particle files."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from cryoweave.errors import InputError
from cryoweave.formats import read_particles_cs, read_particles_star
from cryoweave.formats.cs import poses_from_rotvec


def euler_matrix(rot, tilt, psi):
    """RELION A = Rz(psi)·Ry(tilt)·Rz(rot) with passive matrices (conventions.md)."""
    def rz(t):
        c, s = np.cos(np.radians(t)), np.sin(np.radians(t))
        return np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]])

    def ry(t):
        c, s = np.cos(np.radians(t)), np.sin(np.radians(t))
        return np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])

    return rz(psi) @ ry(tilt) @ rz(rot)


def test_pose_conversion_transposes_the_rotation_vector_matrix():
    rng = np.random.default_rng(3)
    rotvec = Rotation.random(20, random_state=4).as_rotvec()
    angles = poses_from_rotvec(rotvec)
    for vec, (rot, tilt, psi) in zip(rotvec, angles, strict=True):
        expected_a = Rotation.from_rotvec(vec).as_matrix().T  # cryoSPARC's R is RELION's Aᵀ
        np.testing.assert_allclose(euler_matrix(rot, tilt, psi), expected_a, atol=1e-12)
        assert 0 <= tilt <= 180
    assert rng is not None


@pytest.mark.real_data
def test_real_cs_matches_its_relion_star(real_data_dir):
    cs = read_particles_cs(real_data_dir / "cryodrgn/empiar_10076_7.cs")
    star = read_particles_star(real_data_dir / "cryodrgn/empiar_10076_7.star")
    for column in ("defocus_u_a", "defocus_v_a", "defocus_angle_deg"):
        np.testing.assert_allclose(cs.particles[column], star.particles[column], atol=1e-3)
    assert cs.particles["image_path"].tolist() == star.particles["image_path"].tolist()
    assert cs.particles["image_index"].tolist() == star.particles["image_index"].tolist()
    assert cs.optics["pixel_size_a"].iloc[0] == pytest.approx(star.pixel_sizes()[1], rel=1e-6)


@pytest.mark.real_data
def test_real_cryosparc_export_poses_shifts_halves(real_data_dir):
    table = read_particles_cs(real_data_dir / "cryodrgn/cryosparc_P12_J24_001_particles.cs")
    first = table.particles.iloc[0]
    # values cross-checked against pyem and cryoDRGN conversions of the same file
    assert first["rot_deg"] == pytest.approx(-157.808, abs=1e-3)
    assert first["tilt_deg"] == pytest.approx(118.791, abs=1e-3)
    assert first["psi_deg"] == pytest.approx(34.683, abs=1e-3)
    assert first["shift_x_a"] == pytest.approx(33.436, abs=1e-3)
    assert first["shift_y_a"] == pytest.approx(-5.393, abs=1e-3)
    assert first["defocus_angle_deg"] == pytest.approx(-78.131, abs=1e-3)
    assert sorted(table.particles["half"].unique()) == [1, 2]
    assert len(table) == 2019


def test_not_a_cs_file(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros(3))
    (tmp_path / "x.npy").rename(tmp_path / "x.cs")
    with pytest.raises(InputError, match=r"x\.cs"):
        read_particles_cs(tmp_path / "x.cs")


def _cs(tmp_path, **fields):
    dtype = [("blob/path", "S8"), ("blob/idx", "<i8"), ("blob/psize_A", "<f4"),
             ("alignments3D/pose", "<f4", (3,)), ("alignments3D/shift", "<f4", (2,))]
    dtype = [d for d in dtype if d[0] not in fields.get("drop", ())]
    cs = np.zeros(3, dtype=dtype)
    cs["blob/path"] = b"s.mrcs"
    cs["blob/idx"] = [0, 1, 2]
    cs["blob/psize_A"] = 2.0
    cs["alignments3D/pose"] = [0.1, 0.2, 0.3]
    for name, value in fields.items():
        if name != "drop":
            cs[name.replace("__", "/")] = value
    path = tmp_path / "p.cs"
    with open(path, "wb") as handle:
        np.save(handle, cs)
    return path


def test_a_negative_blob_index_is_refused_at_import(tmp_path):
    with pytest.raises(InputError, match=r"p\.cs: row 3, field blob/idx: -1 is not an image "
                                         "index; expected an integer ≥ 0"):
        read_particles_cs(_cs(tmp_path, blob__idx=[0, 1, -1]))


def test_pixel_size_zero_and_pose_without_shift_are_clean_errors(tmp_path):
    with pytest.raises(InputError, match=r"row 2, column blob/psize_A: 0 is out of range"):
        read_particles_cs(_cs(tmp_path, blob__psize_A=[2.0, 0.0, 2.0]))
    with pytest.raises(InputError, match=r"has alignments3D/pose but not alignments3D/shift"):
        read_particles_cs(_cs(tmp_path, drop=("alignments3D/shift",)))
    with pytest.raises(InputError, match=r"row 1, field blob/psize_A: inf is not a finite"):
        read_particles_cs(_cs(tmp_path, blob__psize_A=[np.inf, 2.0, 2.0]))


def test_a_newline_in_a_stack_name_is_refused_at_import(tmp_path):
    with pytest.raises(InputError, match=r"row 2, column blob/path: the file name "
                                         r"'a\\nb' contains a control character"):
        read_particles_cs(_cs(tmp_path, blob__path=[b"s.mrcs", b"a\nb", b"s.mrcs"]))


def test_a_stack_name_that_is_not_utf8_is_a_clean_error(tmp_path):
    with pytest.raises(InputError, match=r"row 3, field blob/path: .* is not UTF-8 text"):
        read_particles_cs(_cs(tmp_path, blob__path=[b"s.mrcs", b"s.mrcs", b"s\xe6.mrcs"]))
