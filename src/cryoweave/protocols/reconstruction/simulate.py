"""SimulateParticles: particles with known poses, shifts, CTF and noise, from a map or phantom."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import field_validator, model_validator

from cryoweave.errors import CryoweaveError, InputError
from cryoweave.formats import ParticleTable, read_particles_star, read_volume
from cryoweave.physical import (
    AMPLITUDE_CONTRAST,
    CS_MM,
    DEFOCUS_A,
    DEFOCUS_CHANGE_A,
    PIXEL_SIZE_A,
    SHIFT_A,
    SNR,
    VOLTAGE_KV,
)
from cryoweave.plugin import (
    ADVANCED,
    Input,
    ParticleSet,
    Plan,
    PlanContext,
    Protocol,
    ProtocolOutputs,
    ProtocolParams,
    Step,
    StepContext,
    StepResult,
    SummaryContext,
    VolumeSet,
    param,
)
from cryoweave.protocols._shared.device import compute_resources, device_info, step_device
from cryoweave.protocols._shared.summary import set_summary
from cryoweave.protocols._shared.symmetry import SYMMETRY_NAMES, check_symmetry
from cryoweave.protocols.reconstruction._simulation import (
    SimulationSettings,
    optics_frame,
    phantom_volume,
    resample_to,
    settings_record,
    simulate_files,
)

POSE_LABELS = {"rot_deg": "rlnAngleRot", "tilt_deg": "rlnAngleTilt", "psi_deg": "rlnAnglePsi"}


class SimulateParticles(Protocol):
    """Simulate particle images with known truth: uniform random orientations (or the poses of
    a STAR file), shifts within ``max_shift_a``, CTF with defocus in ``defocus_range_a`` and
    astigmatism up to ``astigmatism_a``, and white noise at ``snr`` (variance of the clean
    CTF-modulated images over the noise variance). Writes a stack and a RELION 3.1 STAR with the
    true poses and random half subsets (rlnRandomSubset); deterministic per seed. The map is
    the input volume (resampled to the pixel size and box asked for) or a built-in phantom of
    200 Gaussian atoms (with a symmetry: about 200/|G|, at least 20, per asymmetric unit).
    """

    label = "simulate particles"

    class Params(ProtocolParams):
        volume: Input[VolumeSet] | None = param(None, section="Map",
                                                description="Map to project (or use phantom)")
        phantom: bool = param(False, section="Map",
                              description="Use the built-in phantom of Gaussian atoms")
        symmetry: str = param("c1", section="Map", visible_if={"phantom": True},
                              description=f"Symmetry of the phantom ({SYMMETRY_NAMES})")
        n_particles: int = param(1000, gt=0, section="Particles",
                                 description="Number of particles (ignored with poses_star)",
                                 title="Number of particles")
        box_px: int | None = param(None, gt=1, unit="px", section="Particles",
                                   description="Box of the particles (default: the map's; "
                                               "64 for the phantom)", title="Box size")
        pixel_size_a: float | None = param(
            None, **PIXEL_SIZE_A.bounds(), unit="Å", section="Particles",
            description="Pixel size (default: the map's; 2 Å for the phantom)")
        poses_star: str | None = param(None, section="Particles", expert=ADVANCED, path=True,
                                       description="Take orientations (and origins) from this "
                                                   "STAR file instead of random ones",
                                                   title="Poses (STAR file)")
        defocus_range_a: tuple[float, float] = param(
            (10000.0, 30000.0), unit="Å", section="CTF",
            description="Defocus range (min, max), positive = underfocus")
        astigmatism_a: float = param(500.0, **DEFOCUS_CHANGE_A.bounds(), unit="Å", section="CTF",
                                     description="Maximum defocus difference U − V")
        voltage_kv: float = param(300.0, **VOLTAGE_KV.bounds(), unit="kV", section="CTF",
                                  description="Acceleration voltage")
        cs_mm: float = param(2.7, **CS_MM.bounds(), unit="mm", section="CTF",
                             description="Spherical aberration", title="Spherical aberration (Cs)")
        amplitude_contrast: float = param(0.1, **AMPLITUDE_CONTRAST.bounds(), section="CTF",
                                          description="Amplitude contrast")
        snr: float | None = param(1.0, **SNR.bounds(), section="Noise",
                                  description="Signal-to-noise ratio (variance); none = no noise")
        max_shift_a: float = param(0.0, ge=0, le=SHIFT_A.high, unit="Å", section="Particles",
                                   description="Shifts are drawn in a disc of this radius",
                                   title="Maximum shift")
        seed: int = param(0, section="Particles", description="Random seed")

        @field_validator("symmetry")
        @classmethod
        def _symmetry(cls, value: str) -> str:
            return check_symmetry(value)

        @field_validator("defocus_range_a")
        @classmethod
        def _range(cls, value: tuple[float, float]) -> tuple[float, float]:
            if not 0 < value[0] <= value[1] or not DEFOCUS_A.contains(value[1]):
                raise ValueError(f"defocus_range_a={list(value)} must be 0 < min ≤ max ≤ "
                                 f"{DEFOCUS_A.high:g} Å")
            return value

        @model_validator(mode="after")
        def _one_map(self) -> SimulateParticles.Params:
            if (self.volume is None) == (not self.phantom):
                raise ValueError("give a volume or set phantom: true (exactly one)")
            if self.phantom and self.symmetry != "c1" and self.volume is not None:
                raise ValueError("symmetry applies to the phantom only")
            return self

    class Outputs(ProtocolOutputs):
        particles: ParticleSet
        truth: VolumeSet

    def check_inputs(self, params: Any, inputs: Mapping[str, Any]) -> list[str]:
        if not params.poses_star:
            return []
        if not Path(params.poses_star).is_file():
            return [f"parameter 'poses_star': file {params.poses_star} not found"]
        try:
            poses = read_particles_star(params.poses_star).particles
        except CryoweaveError as exc:
            return [f"parameter 'poses_star': {exc}"]
        missing = [label for column, label in POSE_LABELS.items()
                   if column not in poses or poses[column].isna().any()]
        if missing or poses.empty:
            what = f"no {', '.join(missing)} for every particle" if missing else "no particles"
            return [f"parameter 'poses_star': {params.poses_star} has {what}; give a STAR "
                    "file with orientations, or leave poses_star out for random ones"]
        return []

    def summary(self, ctx: SummaryContext) -> dict[str, Any]:
        return set_summary(ctx.output("particles"), "particles")

    def plan(self, params: Any, ctx: PlanContext) -> Plan:
        volume_path, volume_pixel = None, None
        if params.volume is not None:
            row = ctx.input("volume").to_frame().iloc[0]
            volume_path, volume_pixel = str(row["path"]), float(row["pixel_size_a"])
        args = {"params": params.model_dump(mode="json", exclude={"volume"}),
                "volume_path": volume_path, "volume_pixel_size_a": volume_pixel}
        return Plan(steps=[Step("simulate", simulate_step, args,
                                outputs=["extra/particles.mrcs", "extra/particles.star",
                                         "extra/truth.mrc"], label="simulate particles",
                                resources=compute_resources(ctx))])


def truth_volume(params: dict[str, Any], volume_path: str | None,
                 volume_pixel_size_a: float | None) -> tuple[np.ndarray, float]:
    """The map the particles are projected from, at the pixel size and box asked for."""
    if volume_path is None:
        pixel = params.get("pixel_size_a") or 2.0
        box = params.get("box_px") or 64
        return phantom_volume(box, pixel, symmetry=params.get("symmetry", "c1"),
                              seed=params.get("seed", 0)), pixel
    volume, header_pixel = read_volume(volume_path)
    pixel = volume_pixel_size_a or header_pixel
    if not PIXEL_SIZE_A.contains(pixel):
        raise InputError(f"{volume_path}: the map's pixel size {pixel:g} Å is missing or out of "
                         f"range (expected {PIXEL_SIZE_A.describe()}); give it "
                         "(--volume-pixel-size, or pixel_size_a when importing the map)")
    return resample_to(volume, pixel, params.get("pixel_size_a"), params.get("box_px"))


def simulate_to_folder(params: dict[str, Any], volume_path: str | None,
                       volume_pixel_size_a: float | None, folder: Path,
                       progress: Any = None, device: str = "cpu"
                       ) -> tuple[ParticleTable, SimulationSettings, float]:
    """Simulate into ``folder`` (particles.mrcs, particles.star, truth.mrc)."""
    volume, pixel = truth_volume(params, volume_path, volume_pixel_size_a)
    poses = None
    if params.get("poses_star"):
        poses = read_particles_star(params["poses_star"]).particles
    low, high = params["defocus_range_a"]
    settings = SimulationSettings(
        n_particles=params["n_particles"], box_px=volume.shape[0], pixel_size_a=pixel,
        defocus_min_a=low, defocus_max_a=high, astigmatism_a=params["astigmatism_a"],
        voltage_kv=params["voltage_kv"], cs_mm=params["cs_mm"],
        amplitude_contrast=params["amplitude_contrast"], snr=params["snr"],
        max_shift_a=params["max_shift_a"], seed=params["seed"])
    table, sigma = simulate_files(volume, settings, folder, poses=poses, progress=progress,
                                  device=device)
    return table, settings, sigma


def simulate_step(ctx: StepContext, params: dict[str, Any], volume_path: str | None,
                  volume_pixel_size_a: float | None) -> StepResult:
    import pandas as pd

    device = step_device(ctx)
    table, settings, sigma = simulate_to_folder(
        params, volume_path, volume_pixel_size_a, ctx.extra_dir,
        progress=lambda done, total: ctx.progress(done, total), device=device)
    particles = table.particles.copy()
    particles.insert(0, "item_id", np.arange(1, len(particles) + 1, dtype=np.int64))
    pixel, box = settings.pixel_size_a, settings.box_px
    truth = pd.DataFrame([{"item_id": 1, "path": str(ctx.extra_dir / "truth.mrc"),
                           "pixel_size_a": pixel, "box_px": box}])
    properties = {"pixel_size_a": pixel, "box_px": box, "has_ctf": True,
                  "has_poses": True, "phase_flipped": False, "voltage_kv": settings.voltage_kv,
                  "cs_mm": settings.cs_mm, "amplitude_contrast": settings.amplitude_contrast,
                  "simulation": settings_record(settings, sigma),
                  "star_layout": table.star_layout()}
    return StepResult(publish={"particles": particles, "truth": truth},
                      optics={"particles": optics_frame(settings)},
                      properties={"particles": properties,
                                  "truth": {"pixel_size_a": pixel, "box_px": box}},
                      info=device_info(device, particles=len(particles), noise_sigma=sigma))
