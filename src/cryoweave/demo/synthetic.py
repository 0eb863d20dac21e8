"""Small synthetic data sets generated on the fly (for the demo and the tests).

Nothing here is meant as a physical simulation; ``SimulateParticles`` does that.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cryoweave.formats import ParticleTable, StackWriter, write_mrc, write_particles_star


def blob_image(shape: tuple[int, int], n_blobs: int, sigma_px: float,
               rng: np.random.Generator) -> np.ndarray:
    """Gaussian blobs at random positions plus unit white noise, float32 ``(y, x)``."""
    y, x = np.indices(shape, dtype=np.float32)
    image = rng.normal(0.0, 1.0, shape).astype(np.float32)
    for cy, cx in zip(rng.uniform(0, shape[0], n_blobs), rng.uniform(0, shape[1], n_blobs),
                      strict=True):
        image += 3.0 * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma_px**2))
    return image


def write_micrographs(folder: Path, n: int, shape: tuple[int, int], pixel_size_a: float,
                      rng: np.random.Generator, prefix: str = "mic") -> list[Path]:
    """``n`` synthetic micrographs ``<prefix>_000.mrc`` … in ``folder``."""
    paths = []
    for i in range(n):
        path = folder / f"{prefix}_{i:03d}.mrc"
        write_mrc(path, blob_image(shape, 40, 6.0, rng) + 10.0, pixel_size_a)
        paths.append(path)
    return paths


def blob_volume(box_px: int, rng: np.random.Generator, n_atoms: int = 40) -> np.ndarray:
    """An asymmetric volume of Gaussian blobs inside a sphere of radius box/3, float32."""
    z, y, x = np.indices((box_px,) * 3, dtype=np.float32) - box_px // 2
    volume = np.zeros((box_px,) * 3, np.float32)
    radius = box_px / 3
    centres = rng.uniform(-radius, radius, (n_atoms * 3, 3))
    centres = centres[np.linalg.norm(centres, axis=1) < radius][:n_atoms]
    for cz, cy, cx in centres:
        volume += np.exp(-((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2) / (2 * 2.0**2))
    return volume


def particle_table(n: int, stack_path: Path, pixel_size_a: float, box_px: int,
                   rng: np.random.Generator) -> ParticleTable:
    """A RELION-3.1-like particle table with CTF, random poses, shifts and halves."""
    particles = pd.DataFrame({
        "image_path": [str(stack_path.resolve())] * n,
        "image_index": np.arange(n, dtype=np.int64),
        "micrograph_name": [f"mic_{i % 8:03d}.mrc" for i in range(n)],
        "coord_x_px": rng.uniform(32, 992, n).round(1),
        "coord_y_px": rng.uniform(32, 992, n).round(1),
        "defocus_u_a": rng.uniform(10000, 30000, n).round(1),
        "optics_group": np.ones(n, dtype=np.int64),
        "rot_deg": rng.uniform(-180, 180, n).round(4),
        "tilt_deg": np.degrees(np.arccos(rng.uniform(-1, 1, n))).round(4),
        "psi_deg": rng.uniform(-180, 180, n).round(4),
        "shift_x_a": rng.normal(0, 2, n).round(3),
        "shift_y_a": rng.normal(0, 2, n).round(3),
        "half": rng.integers(1, 3, n),
    })
    particles.insert(6, "defocus_v_a", (particles["defocus_u_a"] - 200).round(1))
    particles.insert(7, "defocus_angle_deg", rng.uniform(0, 180, n).round(3))
    particles["rlnClassNumber"] = 1
    optics = pd.DataFrame({"group_id": [1], "name": ["opticsGroup1"],
                           "pixel_size_a": [pixel_size_a], "box_px": [box_px],
                           "voltage_kv": [300.0], "cs_mm": [2.7], "amplitude_contrast": [0.1],
                           "rlnImageDimensionality": [2]})
    return ParticleTable(particles, optics)


def write_particles(folder: Path, n: int, box_px: int, pixel_size_a: float,
                    rng: np.random.Generator, name: str = "particles") -> Path:
    """A stack of ``n`` blob images and a RELION 3.1 STAR for it; returns the STAR path."""
    stack = folder / f"{name}.mrcs"
    with StackWriter(stack, n, box_px, pixel_size_a) as writer:
        for start in range(0, n, 256):
            count = min(256, n - start)
            writer.write(start, np.stack([blob_image((box_px, box_px), 1, box_px / 10, rng)
                                          for _ in range(count)]))
    star = folder / f"{name}.star"
    write_particles_star(particle_table(n, stack, pixel_size_a, box_px, rng), star)
    return star
