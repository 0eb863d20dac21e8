"""Our conventions against RELION 3.1 itself: symmetry operators, relion_project (with and
without CTF, shifts) and relion_reconstruct --ctf. Run with `pytest tests/external -m external`.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cryoweave.engine._ctf import ctf_2d
from cryoweave.engine._fsc import fsc
from cryoweave.engine._geometry import euler_to_matrix
from cryoweave.engine._phantom import atoms_phantom
from cryoweave.engine._projection import project, reconstruct
from cryoweave.engine._symmetry import symmetry_matrices

mrcfile = pytest.importorskip("mrcfile")
starfile = pytest.importorskip("starfile")
pd = pytest.importorskip("pandas")

pytestmark = pytest.mark.external

OPTICS = {"voltage_kv": 300.0, "cs_mm": 2.7, "amplitude_contrast": 0.1}


def _need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} not found on PATH (RELION 3.1 binaries)")
    return path


def _run(args: list[str], cwd: Path) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _write_particles(folder: Path, stack: str, box: int, pixel: float, angles: np.ndarray,
                     origins_a: np.ndarray, defocus: np.ndarray) -> Path:
    """RELION 3.1 particles STAR (data_optics + data_particles) for `stack`."""
    n = len(angles)
    optics = pd.DataFrame({
        "rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"],
        "rlnImagePixelSize": [pixel], "rlnImageSize": [box], "rlnImageDimensionality": [2],
        "rlnVoltage": [OPTICS["voltage_kv"]], "rlnSphericalAberration": [OPTICS["cs_mm"]],
        "rlnAmplitudeContrast": [OPTICS["amplitude_contrast"]],
    })
    particles = pd.DataFrame({
        "rlnImageName": [f"{i + 1:06d}@{stack}" for i in range(n)],
        "rlnAngleRot": angles[:, 0], "rlnAngleTilt": angles[:, 1], "rlnAnglePsi": angles[:, 2],
        "rlnOriginXAngst": origins_a[:, 0], "rlnOriginYAngst": origins_a[:, 1],
        "rlnDefocusU": defocus[:, 0], "rlnDefocusV": defocus[:, 1],
        "rlnDefocusAngle": defocus[:, 2], "rlnOpticsGroup": np.ones(n, dtype=int),
    })
    path = folder / "particles.star"
    starfile.write({"optics": optics, "particles": particles}, path, overwrite=True)
    return path


def _random_set(n: int, seed: int, shift_a: float) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    angles = np.stack([rng.uniform(-180, 180, n), np.degrees(np.arccos(rng.uniform(-1, 1, n))),
                       rng.uniform(-180, 180, n)], 1)
    origins_a = rng.uniform(-shift_a, shift_a, (n, 2))
    du = rng.uniform(8000, 25000, n)
    defocus = np.stack([du, du - rng.uniform(0, 1500, n), rng.uniform(0, 180, n)], 1)
    return angles, origins_a, defocus


def _ctf(defocus: np.ndarray, pixel: float, box: int) -> np.ndarray:
    return ctf_2d(defocus[:, 0], defocus[:, 1], defocus[:, 2], pixel_size_a=pixel, box_px=box,
                  **OPTICS)


# ---------------------------------------------------------------- symmetry operators


def _parse_relion_operators(text: str) -> np.ndarray:
    lines, matrices = text.splitlines(), []
    for i, line in enumerate(lines):
        if line.strip().startswith("R("):
            matrices.append([[float(v) for v in lines[i + k].split()] for k in (1, 2, 3)])
    return np.array(matrices)


@pytest.mark.parametrize("group", ["C7", "D7", "T", "O", "I", "I1", "I2", "I3", "I4"])
def test_symmetry_operators_equal_relions(group, tmp_path):
    program = _need("relion_refine")
    theirs = _parse_relion_operators(_run([program, "--sym", group, "--print_symmetry_ops"],
                                          tmp_path))
    ours = symmetry_matrices(group)
    assert theirs.shape == ours.shape
    for matrix in ours:  # RELION prints 5–8 significant digits
        assert np.abs(theirs - matrix).max(axis=(1, 2)).min() < 1e-4


# ---------------------------------------------------------------- relion_project


@pytest.mark.parametrize("with_ctf", [False, True])
def test_projection_equals_relion_project(with_ctf, tmp_path):
    program = _need("relion_project")
    box, pixel = 64, 1.5
    volume = atoms_phantom(box, pixel, n_atoms=150, seed=3)
    with mrcfile.new(tmp_path / "map.mrc") as m:
        m.set_data(volume)
        m.voxel_size = pixel
    angles, origins_a, defocus = _random_set(8, 5, shift_a=6.0)
    _write_particles(tmp_path, "unused.mrcs", box, pixel, angles, origins_a, defocus)
    _run([program, "--i", "map.mrc", "--o", "proj", "--ang", "particles.star", "--angpix",
          str(pixel), *(["--ctf"] if with_ctf else [])], tmp_path)
    with mrcfile.open(tmp_path / "proj.mrcs") as m:
        theirs = m.data.astype(np.float64)
    ours = project(volume, euler_to_matrix(*angles.T), origin_xy_px=origins_a / pixel,
                   ctf=_ctf(defocus, pixel, box) if with_ctf else None).astype(np.float64)
    error = np.linalg.norm(ours - theirs, axis=(1, 2)) / np.linalg.norm(theirs, axis=(1, 2))
    correlation = [np.corrcoef(a.ravel(), b.ravel())[0, 1]
                   for a, b in zip(ours, theirs, strict=True)]
    print(f"relion_project ctf={with_ctf}: max relative error {error.max():.2e}, "
          f"min correlation {min(correlation):.7f}")
    assert error.max() < 1e-3  # measured 1–2e-4 (float32 images)
    # the wrong origin sign would not match at all
    flipped = project(volume, euler_to_matrix(*angles.T), origin_xy_px=-origins_a / pixel,
                      ctf=_ctf(defocus, pixel, box) if with_ctf else None)
    assert (np.linalg.norm(flipped - theirs) / np.linalg.norm(theirs)) > 0.3


def test_odd_box_relion_project_is_one_pixel_off(tmp_path):
    """RELION's odd-box projections sit 1 px further along +x and +y than the N // 2 centre of
    conventions.md (ASPIRE notes the same); our centre stays at N // 2."""
    program = _need("relion_project")
    box, pixel = 65, 1.5
    volume = atoms_phantom(box, pixel, n_atoms=150, seed=3)
    with mrcfile.new(tmp_path / "map.mrc") as m:
        m.set_data(volume)
        m.voxel_size = pixel
    angles, origins_a, defocus = _random_set(6, 7, shift_a=4.0)
    _write_particles(tmp_path, "unused.mrcs", box, pixel, angles, origins_a, defocus)
    _run([program, "--i", "map.mrc", "--o", "proj", "--ang", "particles.star", "--angpix",
          str(pixel)], tmp_path)
    with mrcfile.open(tmp_path / "proj.mrcs") as m:
        theirs = m.data.astype(np.float64)
    a = euler_to_matrix(*angles.T)
    moved = project(volume, a, origin_xy_px=origins_a / pixel - 1.0)  # translate by +1 px
    error = np.linalg.norm(moved - theirs) / np.linalg.norm(theirs)
    assert error < 1e-3
    plain = project(volume, a, origin_xy_px=origins_a / pixel)
    assert np.linalg.norm(plain - theirs) / np.linalg.norm(theirs) > 0.1


# ---------------------------------------------------------------- relion_reconstruct


def test_reconstruction_agrees_with_relion_reconstruct(tmp_path):
    program = _need("relion_reconstruct")
    box, pixel, n = 64, 2.0, 3000
    truth = atoms_phantom(box, pixel, n_atoms=300, atom_sigma_a=2.4, seed=8)
    angles, origins_a, defocus = _random_set(n, 9, shift_a=6.0)
    a = euler_to_matrix(*angles.T)
    ctf = _ctf(defocus, pixel, box)
    images = project(truth, a, origin_xy_px=origins_a / pixel, ctf=ctf, padding=3.0)
    with mrcfile.new(tmp_path / "particles.mrcs") as m:
        m.set_data(images.astype(np.float32))
        m.voxel_size = pixel
    _write_particles(tmp_path, "particles.mrcs", box, pixel, angles, origins_a, defocus)
    _run([program, "--i", "particles.star", "--o", "relion.mrc", "--ctf"], tmp_path)
    with mrcfile.open(tmp_path / "relion.mrc") as m:
        theirs = m.data.astype(np.float64)
    ours = reconstruct(images, a, ctf=ctf, origin_xy_px=origins_a / pixel)
    up_to = int(0.8 * box / 2)
    agreement = fsc(ours, theirs, pixel_size_a=pixel).values[1 : up_to + 1]
    ours_truth = fsc(ours, truth).values[1 : up_to + 1]
    theirs_truth = fsc(theirs, truth).values[1 : up_to + 1]
    print(f"relion_reconstruct: FSC(ours, RELION) ≥ {agreement.min():.5f} up to 0.8 Nyquist; "
          f"vs truth: ours ≥ {ours_truth.min():.5f}, RELION ≥ {theirs_truth.min():.5f}")
    assert agreement.min() >= 0.95
    assert ours_truth.min() >= theirs_truth.min() - 0.01
