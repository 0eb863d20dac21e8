"""Simulated particles with known truth: random poses, shifts, CTF and white noise.

Deterministic per seed: the parameters come from ``default_rng(seed)``, the noise from
``default_rng([seed, 1])`` consumed in particle order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cryoweave.engine import (
    Projector,
    atoms_phantom,
    euler_to_matrix,
    resample_volume,
    symmetry_order,
)
from cryoweave.formats import ParticleTable, StackWriter, write_mrc, write_particles_star
from cryoweave.protocols._shared.device import namespace, to_device, to_host
from cryoweave.protocols._shared.particle_arrays import arrays_from_frame

if TYPE_CHECKING:  # loads on first use: light commands do not need it
    import pandas as pd

SNR_SAMPLE = 1000  # particles whose clean images set the noise level


@dataclass(frozen=True)
class SimulationSettings:
    n_particles: int
    box_px: int
    pixel_size_a: float
    defocus_min_a: float = 10000.0
    defocus_max_a: float = 30000.0
    astigmatism_a: float = 500.0
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.1
    snr: float | None = 1.0
    max_shift_a: float = 0.0
    seed: int = 0


PHANTOM_ATOMS = 200


def phantom_volume(box_px: int, pixel_size_a: float, *, symmetry: str = "c1",
                   seed: int = 0) -> np.ndarray:
    """The built-in phantom of Gaussian atoms: 200 atoms in total, asymmetric, or with a
    symmetry about 200/|G| atoms (at least 20) per asymmetric unit, so that a symmetric
    phantom keeps features an alignment can use (not a featureless blob)."""
    if symmetry.lower() == "c1":
        return atoms_phantom(box_px, pixel_size_a, seed=seed, n_atoms=PHANTOM_ATOMS)
    atoms = max(20, round(PHANTOM_ATOMS / symmetry_order(symmetry)))
    return atoms_phantom(box_px, pixel_size_a, seed=seed, n_atoms=atoms, symmetry=symmetry)


def resample_to(volume: np.ndarray, pixel_size_a: float, target_pixel_a: float | None,
                target_box_px: int | None) -> tuple[np.ndarray, float]:
    """The volume at the pixel size and box asked for (float32), with its exact pixel size."""
    out, pixel = resample_volume(volume, pixel_size_a, target_pixel_a, target_box_px)
    return np.asarray(out, np.float32), pixel


def draw_parameters(settings: SimulationSettings,
                    poses: pd.DataFrame | None = None) -> pd.DataFrame:
    """Uniform random orientations (or ``poses``), shifts in a disc, defocus, halves."""
    import pandas as pd

    rng = np.random.default_rng(settings.seed)
    n = settings.n_particles if poses is None else len(poses)
    rot = rng.uniform(-180.0, 180.0, n)
    tilt = np.degrees(np.arccos(rng.uniform(-1.0, 1.0, n)))  # uniform on the sphere
    psi = rng.uniform(-180.0, 180.0, n)
    radius = settings.max_shift_a * np.sqrt(rng.uniform(0.0, 1.0, n))
    angle = rng.uniform(0.0, 2 * np.pi, n)
    defocus = rng.uniform(settings.defocus_min_a, settings.defocus_max_a, n)
    astigmatism = rng.uniform(0.0, settings.astigmatism_a, n)
    frame = pd.DataFrame({
        "rot_deg": rot, "tilt_deg": tilt, "psi_deg": psi,
        "shift_x_a": radius * np.cos(angle), "shift_y_a": radius * np.sin(angle),
        "defocus_u_a": defocus + astigmatism / 2, "defocus_v_a": defocus - astigmatism / 2,
        "defocus_angle_deg": rng.uniform(0.0, 180.0, n),
        "half": rng.integers(1, 3, n),
    })
    if poses is not None:
        for column in ("rot_deg", "tilt_deg", "psi_deg", "shift_x_a", "shift_y_a"):
            if column in poses and poses[column].notna().all():
                frame[column] = poses[column].to_numpy(np.float64)
    return frame


def optics_frame(settings: SimulationSettings) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame({"group_id": [1], "name": ["opticsGroup1"],
                         "pixel_size_a": [settings.pixel_size_a], "box_px": [settings.box_px],
                         "voltage_kv": [settings.voltage_kv], "cs_mm": [settings.cs_mm],
                         "amplitude_contrast": [settings.amplitude_contrast],
                         "rlnImageDimensionality": [2]})


def particle_frame(parameters: pd.DataFrame, stack_path: Path) -> pd.DataFrame:
    n = len(parameters)
    frame = parameters.copy()
    frame.insert(0, "image_path", str(stack_path))
    frame.insert(1, "image_index", np.arange(n, dtype=np.int64))
    frame.insert(2, "micrograph_name", "simulated")
    frame["optics_group"] = 1
    return frame


def simulate_stack(volume: np.ndarray, parameters: pd.DataFrame, settings: SimulationSettings,
                   stack_path: Path, *, batch_size: int = 500,
                   progress: Callable[[int, int], None] | None = None,
                   device: str = "cpu") -> float:
    """Write the particle stack; returns the noise standard deviation used.

    Projection runs on ``device`` (the volume and each batch's poses, CTFs and origins move
    there once); the noise is drawn on the host from the seeded generator and added to the
    projections brought back for writing, so the stack does not depend on the device beyond
    rounding.
    """
    frame = particle_frame(parameters, stack_path)
    arrays = arrays_from_frame(frame, optics_frame(settings))
    xp = namespace(device)
    projector = Projector.from_volume(to_device(volume, device))

    def on_device(rows: slice) -> dict:
        return {"origin_xy_px": to_device(arrays.origins_px(rows), device),
                "ctf": to_device(arrays.ctf(rows), device)}

    noise_rng = np.random.default_rng([settings.seed, 1])
    n = len(frame)
    sigma = 0.0
    if settings.snr:
        sample = slice(0, min(n, SNR_SAMPLE))
        clean = projector.project(to_device(euler_to_matrix(arrays["rot_deg"][sample],
                                                            arrays["tilt_deg"][sample],
                                                            arrays["psi_deg"][sample]), device),
                                  **on_device(sample))
        sigma = float(xp.sqrt(xp.mean(xp.var(clean, axis=(1, 2))) / settings.snr))
        del clean
    with StackWriter(stack_path, n, settings.box_px, settings.pixel_size_a) as writer:
        for start in range(0, n, batch_size):
            rows = slice(start, min(n, start + batch_size))
            images = to_host(projector.project(to_device(arrays.matrices(rows), device),
                                               **on_device(rows)))
            if sigma:
                images += noise_rng.normal(0.0, sigma, images.shape).astype(np.float32)
            writer.write(start, images)
            if progress is not None:
                progress(rows.stop, n)
    return sigma


def simulate_files(volume: np.ndarray, settings: SimulationSettings, folder: Path, *,
                   poses: pd.DataFrame | None = None,
                   progress: Callable[[int, int], None] | None = None, device: str = "cpu"
                   ) -> tuple[ParticleTable, float]:
    """``folder``/particles.mrcs + particles.star (RELION 3.1, true poses) + truth.mrc."""
    folder.mkdir(parents=True, exist_ok=True)
    parameters = draw_parameters(settings, poses)
    stack = folder / "particles.mrcs"
    sigma = simulate_stack(volume, parameters, settings, stack, progress=progress,
                           device=device)
    table = ParticleTable(particle_frame(parameters, stack), optics_frame(settings))
    write_particles_star(table, folder / "particles.star")
    write_mrc(folder / "truth.mrc", volume, settings.pixel_size_a)
    return table, sigma


def settings_record(settings: SimulationSettings, sigma: float) -> dict:
    return {**asdict(settings), "noise_sigma": sigma}
