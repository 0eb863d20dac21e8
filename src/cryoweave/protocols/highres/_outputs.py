"""The outputs of a finished ReconstructHighRes run: maps at the original grid, particles,
pictures, and the optional post-processing script."""

from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryoweave.engine import lowpass_filter_a, resample_volume
from cryoweave.errors import CryoweaveError
from cryoweave.formats import read_volume, write_mrc
from cryoweave.plugin import Derived, StepContext, StepResult
from cryoweave.protocols.highres._state import iteration_dir, read_json, read_npz
from cryoweave.protocols.reconstruction._arrays import read_arrays
from cryoweave.viewers import plot_fsc, plot_series, plot_volume
from cryoweave.viewers._images import _pyplot


def angular_distribution(rot_deg: np.ndarray, tilt_deg: np.ndarray, path: Path) -> Path:
    """A 2-D histogram of the projection directions (rot, tilt), as a PNG."""
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(6.4, 3.6))
    _counts, _, _, image = ax.hist2d(rot_deg, tilt_deg, bins=(72, 36),
                                    range=((-180, 180), (0, 180)), cmap="viridis")
    figure.colorbar(image, ax=ax, label="particles")
    ax.set_xlabel("rot (°)")
    ax.set_ylabel("tilt (°)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def finalize_step(ctx: StepContext, iterations: int, arrays: str,
                  settings: dict[str, Any]) -> StepResult:
    started = time.perf_counter()
    particles = read_arrays(arrays)
    last = iteration_dir(ctx.extra_dir, iterations)
    record = read_json(last / "result.json")
    pixel, box = particles.pixel_size_a, particles.box_px
    files: dict[str, str] = {}
    maps = {}
    for name in ("half1", "half2", "map"):
        volume, working_pixel = read_volume(last / f"{name}.mrc")
        full, _ = resample_volume(volume, working_pixel, pixel, box)
        maps[name] = np.asarray(full, np.float32)
        files[name] = str(write_mrc(ctx.extra_dir / f"final_{name}.mrc", maps[name], pixel))
    resolution = record["resolution_0143_a"]
    filtered = lowpass_filter_a(maps["map"], resolution, pixel)
    files["filtered"] = str(write_mrc(ctx.extra_dir / "final_map_filtered.mrc", filtered, pixel))
    records = [read_json(iteration_dir(ctx.extra_dir, i) / "result.json")
               for i in range(1, iterations + 1)]
    plot_fsc({f"iteration {r['iteration']}": (np.asarray(r["frequency_per_a"]),
                                              np.asarray(r["fsc"])) for r in records},
             ctx.extra_dir / "fsc_iterations.png", title="half-map FSC per iteration")
    plot_series({f"FSC {settings['resolution_criterion']}": [r["resolution_a"]
                                                              for r in records],
                 "FSC 0.143": [r["resolution_0143_a"] for r in records]},
                ctx.extra_dir / "resolution_iterations.png", xlabel="iteration",
                ylabel="resolution (Å)")
    poses = read_npz(last / "poses.npz")
    used = poses["used"]
    angular_distribution(poses["rot_deg"][used], poses["tilt_deg"][used],
                         ctx.extra_dir / "angular_distribution.png")
    for mode in ("slices", "projections"):
        plot_volume(maps["map"], pixel, ctx.extra_dir / f"final_{mode}.png",
                    title="refined map", mode=mode)
    if settings.get("post_script"):
        run_post_script(settings["post_script"], files["map"], ctx)
    ids = particles["item_id"][used]
    updates = pd.DataFrame({
        "item_id": ids, "rot_deg": poses["rot_deg"][used], "tilt_deg": poses["tilt_deg"][used],
        "psi_deg": poses["psi_deg"][used], "shift_x_a": poses["shift_x_a"][used],
        "shift_y_a": poses["shift_y_a"][used], "half": poses["half"][used],
        "weight": poses["weight"][used], "score": poses["score"][used],
        "max_cc": poses["score"][used], "cc_percentile": poses["percentile"][used],
        "angular_change_deg": poses["angular_change_deg"][used],
        "cost": 1.0 - poses["score"][used], "defocus_group": poses["defocus_group"][used],
        "defocus_u_a": particles["defocus_u_a"][used] + poses["defocus_change_a"][used],
        "defocus_v_a": particles["defocus_v_a"][used] + poses["defocus_change_a"][used],
        "defocus_change_a": poses["defocus_change_a"][used],
        "gray_scale": poses["gray_scale"][used], "gray_offset": poses["gray_offset"][used],
        "magnification": poses["magnification"][used]})
    volume = pd.DataFrame([{"item_id": 1, "path": files["map"], "half1_path": files["half1"],
                            "half2_path": files["half2"], "pixel_size_a": pixel,
                            "box_px": box, "filtered_path": files["filtered"],
                            "resolution_a": record["resolution_a"],
                            "resolution_0143_a": resolution}])
    rejected = int((~used).sum())
    return StepResult(
        publish={"volume": volume},
        derive={"particles": Derived("particles", updates,
                                     source_set_id=settings["particles_set_id"])},
        properties={"volume": {"pixel_size_a": pixel, "box_px": box,
                               "symmetry": settings["symmetry"], "resolution_a": resolution},
                    "particles": {"has_poses": True, "rejected_particles": rejected}},
        info={"iterations": iterations, "resolution_0143_a": resolution, "rejected": rejected,
              "seconds": time.perf_counter() - started})


def run_post_script(command: str, map_path: str, ctx: StepContext) -> None:
    """Run the user's post-processing command with the final map as its last argument."""
    arguments = [*shlex.split(command), map_path]
    result = subprocess.run(arguments, cwd=ctx.extra_dir, capture_output=True, text=True,
                            timeout=3600)
    (ctx.run_dir / "logs" / "post_script.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise CryoweaveError(f"post_script {command!r} failed (exit {result.returncode}); "
                             f"see {ctx.run_dir / 'logs' / 'post_script.log'}")
