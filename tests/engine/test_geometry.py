"""Euler angles (RELION/Xmipp ZYZ, passive), projection direction, shifts and their sign."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryoweave.engine import fourier_crop_volume, to_host
from cryoweave.engine._geometry import (
    euler_to_matrix,
    matrix_to_euler,
    projection_direction,
    rotation_angle_deg,
    shift_images,
    shift_phase,
)
from cryoweave.engine._projection import project


def _rz(t):
    c, s = np.cos(np.deg2rad(t)), np.sin(np.deg2rad(t))
    return np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]])  # passive, as in conventions.md


def _ry(t):
    c, s = np.cos(np.deg2rad(t)), np.sin(np.deg2rad(t))
    return np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])


def test_euler_matrix_is_rz_psi_ry_tilt_rz_rot():
    rng = np.random.default_rng(0)
    for rot, tilt, psi in rng.uniform(-180, 180, (20, 3)):
        expected = _rz(psi) @ _ry(tilt) @ _rz(rot)
        np.testing.assert_allclose(euler_to_matrix(rot, tilt, psi), expected, atol=1e-14)


def test_euler_matrix_known_values():
    # rot=90: x goes to −y in the passive convention (the frame rotates by +90 about z)
    np.testing.assert_allclose(euler_to_matrix(90, 0, 0), [[0, 1, 0], [-1, 0, 0], [0, 0, 1]],
                               atol=1e-15)
    np.testing.assert_allclose(euler_to_matrix(0, 90, 0), [[0, 0, -1], [0, 1, 0], [1, 0, 0]],
                               atol=1e-15)


def test_batched_orthonormal_and_projection_direction(xp):
    rng = np.random.default_rng(1)
    rot, tilt, psi = (xp.asarray(a) for a in rng.uniform(0, 360, (3, 50)))
    a = euler_to_matrix(rot, tilt, psi)
    assert a.shape == (50, 3, 3) and type(a) is type(rot)
    a_host = to_host(a)
    np.testing.assert_allclose(a_host @ a_host.transpose(0, 2, 1), np.broadcast_to(np.eye(3),
                               (50, 3, 3)), atol=1e-13)
    np.testing.assert_allclose(np.linalg.det(a_host), 1.0, atol=1e-13)
    r, t = np.deg2rad(to_host(rot)), np.deg2rad(to_host(tilt))
    expected = np.stack([np.cos(r) * np.sin(t), np.sin(r) * np.sin(t), np.cos(t)], -1)
    np.testing.assert_allclose(to_host(projection_direction(a)), expected, atol=1e-14)


@settings(max_examples=200, deadline=None)
@given(st.floats(-180, 180), st.floats(0, 180), st.floats(-180, 180))
def test_matrix_to_euler_round_trip(rot, tilt, psi):
    a = euler_to_matrix(rot, tilt, psi)
    r2, t2, p2 = matrix_to_euler(a)
    assert 0.0 <= float(t2) <= 180.0
    np.testing.assert_allclose(euler_to_matrix(r2, t2, p2), a, atol=1e-9)


@pytest.mark.parametrize("tilt", [0.0, 180.0])
def test_gimbal_lock(tilt):
    a = euler_to_matrix(30.0, tilt, 50.0)
    rot, t, psi = matrix_to_euler(a)
    assert float(rot) == 0.0 and float(t) == tilt
    np.testing.assert_allclose(euler_to_matrix(rot, t, psi), a, atol=1e-12)
    # only rot + psi (tilt 0) or psi − rot (tilt 180) is defined
    assert float(psi) == pytest.approx(80.0 if tilt == 0 else 20.0)


def test_rotation_angle():
    a = euler_to_matrix(10, 20, 30)
    np.testing.assert_allclose(rotation_angle_deg(a, _rz(37) @ a), 37.0, atol=1e-9)
    np.testing.assert_allclose(rotation_angle_deg(a, a), 0.0, atol=1e-5)


@pytest.mark.parametrize("n", [16, 15])
def test_shift_moves_image_by_plus_shift(xp, n):
    image = np.zeros((1, n, n))
    c = n // 2
    image[0, c, c] = 1.0
    moved = to_host(shift_images(xp.asarray(image), 3, -2))  # +3 px in x, −2 px in y
    assert np.unravel_index(np.argmax(moved[0]), moved[0].shape) == (c - 2, c + 3)
    np.testing.assert_allclose(moved[0], np.roll(image[0], (-2, 3), axis=(0, 1)), atol=1e-6)


@pytest.mark.parametrize("n", [8, 9])
def test_shift_phase_against_direct_dft(n):
    sx, sy = 0.3, -1.7
    phase = shift_phase(n, sx, sy, dtype=np.complex128)[0]
    ky = np.where(np.arange(n) <= n // 2, np.arange(n), np.arange(n) - n)
    expected = np.exp(-2j * np.pi * (ky[:, None] * sy + np.arange(n // 2 + 1)[None] * sx) / n)
    np.testing.assert_allclose(phase, expected, atol=1e-13)
    full = shift_phase(n, [sx, 0.0], [sy, 1.0], rfft=False, dtype=np.complex128)
    assert full.shape == (2, n, n)
    np.testing.assert_allclose(full[0, :, : n // 2 + 1], expected, atol=1e-13)


def test_shift_round_trip():
    rng = np.random.default_rng(2)
    images = rng.standard_normal((3, 15, 15))
    back = shift_images(shift_images(images, [1.5, -2.25, 0.1], 0.7), [-1.5, 2.25, -0.1], -0.7)
    np.testing.assert_allclose(back, images, atol=1e-12)


@pytest.mark.real_data
def test_relion_origin_sign_on_real_relion_projections(real_data_dir):
    """RELION particles are their projection translated by −origin (rln_proj_64*, ASPIRE)."""
    import mrcfile
    import starfile

    folder = real_data_dir / "aspire"
    with mrcfile.open(folder / "clean70SRibosome_vol_65p.mrc", permissive=True) as m:
        volume = fourier_crop_volume(m.data.astype(np.float64), 64)
    for name, tolerance in [("rln_proj_64", 0.002), ("rln_proj_64_shifted", None)]:
        table = starfile.read(folder / f"{name}.star")
        table = table["particles"] if isinstance(table, dict) else table
        with mrcfile.open(folder / f"{name}.mrcs", permissive=True) as m:
            images = m.data.astype(np.float64)
        a = euler_to_matrix(*(table[f"rlnAngle{k}"].to_numpy() for k in ("Rot", "Tilt", "Psi")))
        x = "rlnOriginX" if "rlnOriginX" in table else "rlnOriginXAngst"  # pixel size is 1 Å
        origins = np.stack([table[x], table[x.replace("X", "Y")]], 1).astype(float)

        def corr(sign, a=a, origins=origins, images=images):
            p = project(volume, a, origin_xy_px=sign * origins)
            pairs = zip(p, images, strict=True)
            return [np.corrcoef(u.ravel(), v.ravel())[0, 1] for u, v in pairs], p

        plus, p = corr(+1)
        if tolerance is not None:  # centred: our projector equals relion_project
            error = np.linalg.norm(p - images, axis=(1, 2)) / np.linalg.norm(images, axis=(1, 2))
            assert error.max() < tolerance
        else:  # the file's origins are rounded (≤ 0.5 px off), hence the loose bound
            minus, _ = corr(-1)
            assert min(plus) > 0.98 and max(np.abs(minus)) < 0.2
