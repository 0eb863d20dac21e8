"""Micrograph preprocessing kernels: ours vs a straightforward NumPy/SciPy version, and RELION.

Times (best of `--repeat`, seconds per micrograph) every operation of the preprocess chain and
the whole chain without denoising on a 4096×4096 and a 5760×4092 (x × y) float32 micrograph.
The straightforward version is what one writes first: one FFT pair per Fourier operation
(numpy.fft / scipy.ndimage.fourier_gaussian), scipy.ndimage.median_filter over the whole image
for the bad pixels, plain array expressions, full-array TV (np.roll), no fusion. Its 50-iteration
denoising time is extrapolated from `--tv-iterations` iterations (marked *).

RELION: `relion_image_handler` on the same micrograph written as MRC (mrcfile), for --lowpass,
--highpass, --multiply_constant and --rescale_angpix when the binary is on PATH. RELION reads
and writes files, so its times include MRC I/O (ours do not); the MRC round trip alone is
reported for comparison. Goals (issue): chain without denoising < 1.5 s and ≥ 3× the
straightforward version; 50 TV iterations on 4096² < 10 s (2-core machine).

    python benchmarks/preprocess.py [--repeat 3] [--json out.json] [--no-relion]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.ndimage

from cryoweave.engine._denoise import denoise_tv
from cryoweave.engine._preprocess import (
    PreprocessSettings,
    crop_border,
    fourier_downsample,
    fourier_gaussian_filter,
    highpass_filter,
    invert_contrast,
    log_transform,
    lowpass_filter,
    normalize_mean_std,
    preprocess_micrographs,
    remove_bad_pixels,
)

SHAPES = {"4096²": (4096, 4096), "5760×4092": (4092, 5760)}
CHAIN = PreprocessSettings(do_crop=True, do_log=True, do_remove_bad_pixels=True, do_invert=True,
                           do_downsample=True, do_gaussian=True, do_highpass=True,
                           do_lowpass=True, do_normalize=True)
S = CHAIN  # parameters (defaults of the protocol)


def micrograph(shape: tuple[int, int], seed: int = 0, hot_pixels: bool = True) -> np.ndarray:
    """Counts-like float32 image (mean 1000, std 30), with 1 hot pixel in 10,000 if asked."""
    rng = np.random.default_rng(seed)
    image = rng.standard_normal(shape, dtype=np.float32)
    image *= 30.0
    image += 1000.0
    if hot_pixels:
        hot = rng.choice(image.size, image.size // 10_000, replace=False)
        image.flat[hot] = 1e5
    return image


# ------------------------------------------------------------- straightforward implementation


def _radius(shape: tuple[int, int]) -> np.ndarray:
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    return np.sqrt(fy**2 + fx**2)


def _apply(image: np.ndarray, transfer: np.ndarray) -> np.ndarray:
    return np.fft.irfft2(np.fft.rfft2(image) * transfer, s=image.shape).astype(np.float32)


def plain_crop(x: np.ndarray) -> np.ndarray:
    return x[S.crop_px:-S.crop_px, S.crop_px:-S.crop_px].copy()


def plain_log(x: np.ndarray) -> np.ndarray:
    return S.log_a - S.log_b * np.log(x + S.log_c)


def plain_bad_pixels(x: np.ndarray) -> np.ndarray:
    mean, std = x.mean(), x.std()
    bad = (x < mean - S.bad_pixel_stddev * std) | (x > mean + S.bad_pixel_stddev * std)
    return np.where(bad, scipy.ndimage.median_filter(x, size=5, mode="nearest"), x)


def plain_invert(x: np.ndarray) -> np.ndarray:
    return -x


def plain_downsample(x: np.ndarray) -> np.ndarray:
    height, width = x.shape
    out_h, out_w = int(height / S.downsample_factor), int(width / S.downsample_factor)
    spectrum = np.fft.fftshift(np.fft.fft2(x))
    top, left = height // 2 - out_h // 2, width // 2 - out_w // 2
    cropped = spectrum[top:top + out_h, left:left + out_w]
    out = np.fft.ifft2(np.fft.ifftshift(cropped)).real * (out_h * out_w / (height * width))
    return out.astype(np.float32)


def plain_gaussian(x: np.ndarray) -> np.ndarray:
    spectrum = scipy.ndimage.fourier_gaussian(np.fft.rfft2(x), S.gaussian_sigma_px / np.sqrt(2),
                                              n=x.shape[-1])
    return np.fft.irfft2(spectrum, s=x.shape).astype(np.float32)


def plain_highpass(x: np.ndarray) -> np.ndarray:
    w, wc, wr = _radius(x.shape), S.highpass_cutoff, S.highpass_width
    transfer = np.where(w > wc, 1.0, np.where(w > wc - wr,
                                              0.5 * (1 + np.cos(np.pi * (wc - w) / wr)), 0.0))
    return _apply(x, transfer)


def plain_lowpass(x: np.ndarray) -> np.ndarray:
    w, wc, wr = _radius(x.shape), S.lowpass_cutoff, S.lowpass_width
    transfer = np.where(w < wc, 1.0, np.where(w < wc + wr,
                                              0.5 * (1 + np.cos(np.pi * (w - wc) / wr)), 0.0))
    return _apply(x, transfer)


def plain_normalize(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / x.std()


PLAIN_STEPS = [plain_crop, plain_log, plain_bad_pixels, plain_invert, plain_downsample,
               plain_gaussian, plain_highpass, plain_lowpass, plain_normalize]


def plain_chain(x: np.ndarray) -> np.ndarray:
    for step in PLAIN_STEPS:
        x = step(x)
    return x


def plain_tv(x: np.ndarray, iterations: int) -> np.ndarray:
    """Xmipp's TV model written with full arrays and np.roll (float32), no fusion."""
    low, high = float(x.min()), float(x.max())
    k1, mu, beta2 = 3 / 8 + 5.8**2, 0.03, 1e-10
    anscombe = 2 * np.sqrt(np.maximum(0, (x - low) * (255 / (high - low)) + k1))
    s = float(anscombe.max())
    target = anscombe / s

    def vst(xx):
        return 2 * np.sqrt(np.maximum(0, 255 * xx + k1)) / s

    def energy(xx):
        dx, dy = np.roll(xx, -1, 1) - xx, np.roll(xx, -1, 0) - xx
        return 0.5 * np.sum((vst(xx) - target) ** 2) + mu * np.sum(np.sqrt(dx**2 + dy**2 + beta2))

    def gradient(xx):
        dx, dy = np.roll(xx, -1, 1) - xx, np.roll(xx, -1, 0) - xx
        t = np.sqrt(dx**2 + dy**2 + beta2)
        px, py = dx / t, dy / t
        div = px - np.roll(px, 1, 1) + py - np.roll(py, 1, 0)
        data = (2 * 255 / s**2) - (255 / s**2) * target / np.sqrt((255 * xx + k1) / s**2)
        return data - mu * div

    xx = target.copy()
    f_old, g_old, theta = energy(xx), gradient(xx), 1.0
    for _ in range(iterations):
        d = np.clip(xx - theta * g_old, 0, 1) - xx
        delta, xi = float(np.sum(g_old * d)), 1.0
        x_new = xx + d
        f_new = energy(x_new)
        while f_new > f_old + 1e-4 * xi * delta and xi > 1e-6:
            xi /= 2
            x_new = xx + xi * d
            f_new = energy(x_new)
        g_new = gradient(x_new)
        step = x_new - xx
        p, s2 = float(np.sum(step * (g_new - g_old))), float(np.sum(step * step))
        theta = 1000.0 if p <= 0 else min(1000.0, max(0.001, s2 / p))
        xx, g_old, f_old = x_new, g_new, f_new
    return low + xx * (high - low)


# ------------------------------------------------------------------------------ measurement


def best_time(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def operations(image: np.ndarray, clean: np.ndarray, tv_iterations: int
               ) -> dict[str, tuple[Callable[[], object], Callable[[], object], float]]:
    """name -> (ours, straightforward, factor applied to the straightforward time).

    `clean` (no hot pixels, as after bad-pixel removal) is the input of the denoiser.
    """
    batch = image[None]
    tv_scale = S.denoise_iterations / tv_iterations
    return {
        "crop": (lambda: crop_border(batch, S.crop_px), lambda: plain_crop(image), 1.0),
        "log": (lambda: log_transform(batch), lambda: plain_log(image), 1.0),
        "bad pixels": (lambda: remove_bad_pixels(batch, S.bad_pixel_stddev),
                       lambda: plain_bad_pixels(image), 1.0),
        "invert": (lambda: invert_contrast(batch), lambda: plain_invert(image), 1.0),
        "downsample ×2": (lambda: fourier_downsample(batch, S.downsample_factor),
                          lambda: plain_downsample(image), 1.0),
        "denoise (50 it)": (lambda: denoise_tv(clean, S.denoise_iterations),
                            lambda: plain_tv(clean, tv_iterations), tv_scale),
        "gaussian": (lambda: fourier_gaussian_filter(batch, S.gaussian_sigma_px),
                     lambda: plain_gaussian(image), 1.0),
        "high-pass": (lambda: highpass_filter(batch, S.highpass_cutoff, S.highpass_width),
                      lambda: plain_highpass(image), 1.0),
        "low-pass": (lambda: lowpass_filter(batch, S.lowpass_cutoff, S.lowpass_width),
                     lambda: plain_lowpass(image), 1.0),
        "normalize": (lambda: normalize_mean_std(batch), lambda: plain_normalize(image), 1.0),
        "chain w/o denoise": (lambda: preprocess_micrographs(batch, CHAIN),
                              lambda: plain_chain(image), 1.0),
    }


def relion_times(image: np.ndarray, repeat: int) -> dict[str, float]:
    """Wall time of relion_image_handler (file in, file out) per operation, plus MRC I/O."""
    import mrcfile

    binary = shutil.which("relion_image_handler")
    if binary is None:
        return {}
    pixel_size_a = 1.0
    options = {
        f"--lowpass {pixel_size_a / S.lowpass_cutoff:g}": ["--lowpass",
                                                           f"{pixel_size_a / S.lowpass_cutoff}"],
        f"--highpass {pixel_size_a / S.highpass_cutoff:g}": [
            "--highpass", f"{pixel_size_a / S.highpass_cutoff}"],
        "--multiply_constant -1": ["--multiply_constant", "-1"],
        f"--rescale_angpix {pixel_size_a * S.downsample_factor:g}": [
            "--rescale_angpix", f"{pixel_size_a * S.downsample_factor}"],
    }
    results = {}
    with tempfile.TemporaryDirectory(prefix="cw-relion-") as tmp:
        source, target = Path(tmp) / "in.mrc", Path(tmp) / "out.mrc"
        with mrcfile.new(source, overwrite=True) as mrc:
            mrc.set_data(image)
            mrc.voxel_size = pixel_size_a

        def round_trip() -> None:
            with mrcfile.open(source, permissive=True) as mrc:
                data = np.array(mrc.data)
            with mrcfile.new(target, overwrite=True) as mrc:
                mrc.set_data(data)

        results["MRC read + write (mrcfile)"] = best_time(round_trip, repeat)
        env = dict(os.environ, OMP_NUM_THREADS=str(os.cpu_count() or 1))
        for label, extra in options.items():
            command = [binary, "--i", str(source), "--o", str(target),
                       "--angpix", str(pixel_size_a), *extra]
            results[label] = best_time(
                lambda command=command: subprocess.run(command, check=True, env=env,
                                                       capture_output=True), repeat)
    return results


def measure(repeat: int = 3, tv_iterations: int = 5, relion: bool = True) -> dict:
    result: dict = {"cpu_count": os.cpu_count(), "repeat": repeat, "operations": {},
                    "relion": {}}
    for size_label, shape in SHAPES.items():
        image, clean = micrograph(shape), micrograph(shape, seed=1, hot_pixels=False)
        for name, (ours, plain, scale) in operations(image, clean, tv_iterations).items():
            ours_s = best_time(ours, min(repeat, 2) if name.startswith("denoise") else repeat)
            plain_s = best_time(plain, 1 if scale != 1.0 else repeat) * scale
            entry = result["operations"].setdefault(name, {})
            entry[size_label] = {"ours_s": ours_s, "plain_s": plain_s,
                                 "plain_extrapolated": scale != 1.0}
        if relion:
            result["relion"][size_label] = relion_times(image, repeat)
    return result


def print_table(result: dict) -> None:
    sizes = list(SHAPES)
    header = f"{'operation':<20}" + "".join(
        f" | {'ours ' + s:>15} {'plain':>8} {'speed-up':>8}" for s in sizes)
    print(f"seconds per micrograph, best of {result['repeat']}, {result['cpu_count']} CPU cores")
    print(header)
    print("-" * len(header))
    for name, per_size in result["operations"].items():
        row = f"{name:<20}"
        for size in sizes:
            entry = per_size[size]
            star = "*" if entry["plain_extrapolated"] else " "
            row += (f" | {entry['ours_s']:>15.3f} {entry['plain_s']:>7.3f}{star} "
                    f"{entry['plain_s'] / entry['ours_s']:>7.1f}×")
        print(row)
    print("* straightforward TV extrapolated from fewer iterations")
    if any(result["relion"].values()):
        print("\nrelion_image_handler (reads and writes MRC files: times include I/O)")
        labels = list(next(iter(v for v in result["relion"].values() if v)))
        print(f"{'command':<32}" + "".join(f" | {s:>10}" for s in sizes))
        for label in labels:
            print(f"{label:<32}" + "".join(
                f" | {result['relion'][s].get(label, float('nan')):>10.3f}" for s in sizes))


def streaming_throughput(n: int = 8, shape: tuple[int, int] = (4096, 4096)) -> object:
    """Micrographs per minute through ImportMicrographs → PreprocessMicrographs (the runtime,
    MRC reading and writing included), with the facility example's settings."""
    from common import Section

    from cryoweave.formats import write_mrc
    from cryoweave.plugin import registry
    from cryoweave.workflow import run_protocol

    example = json.loads((Path(__file__).resolve().parents[1] / "examples" /
                          "facility_workflow.json").read_text())
    settings = dict(example["protocols"][1]["params"])
    settings.pop("micrographs")
    with tempfile.TemporaryDirectory(prefix="cw-bench-pre-") as tmp:
        folder = Path(tmp) / "mics"
        folder.mkdir()
        rng = np.random.default_rng(0)
        for i in range(n):
            write_mrc(folder / f"m{i:03d}.mrc",
                      rng.normal(100, 5, shape).astype(np.float32), 0.83)
        run_protocol(Path(tmp) / "p", registry().get("ImportMicrographs"),
                     {"pattern": str(folder / "*.mrc")})
        started = time.perf_counter()
        _, summary = run_protocol(Path(tmp) / "p", registry().get("PreprocessMicrographs"),
                                  {**settings, "micrographs": {"run": 1,
                                                               "output": "micrographs"}})
        seconds = time.perf_counter() - started
        assert summary.status == "finished", summary.error
    section = Section(
        title=f"PreprocessMicrographs end to end ({n} × {shape[1]}×{shape[0]}, CPU)",
        intro="The protocol as a facility runs it (examples/facility_workflow.json settings: "
              "bad pixels, downsample ×2, high-pass, normalize), reading and writing MRC files "
              "through the runtime.",
        header=["micrographs", "seconds", "seconds per micrograph", "micrographs per minute"],
        rows=[[str(n), f"{seconds:.1f}", f"{seconds / n:.2f}", f"{60 * n / seconds:.0f}"]])
    return section


def run(repeat: int = 3, tv_iterations: int = 5, relion: bool = True) -> list:
    """Sections for docs/benchmarks.md (benchmarks/run_all.py interface)."""
    from common import Section  # benchmarks/common.py, imported only for the report

    result = measure(repeat, tv_iterations, relion)
    sizes = list(SHAPES)
    ours = Section(
        title="Micrograph preprocessing kernels (CPU)",
        intro=(f"Seconds per float32 micrograph, best of {repeat}, {result['cpu_count']} cores: "
               "cryoweave vs a straightforward NumPy/SciPy version of the same operations (one "
               "FFT pair per operation, scipy.ndimage.median_filter for bad pixels, full-array "
               "TV). Chain = crop → log → bad pixels → invert → downsample ×2 → gaussian → "
               "high-pass → low-pass → normalize (protocol defaults)."),
        header=["operation"] + [f"{label} {size}" for size in sizes
                                for label in ("cryoweave", "straightforward", "speed-up")],
    )
    for name, per_size in result["operations"].items():
        row = [name]
        for size in sizes:
            entry = per_size[size]
            star = "*" if entry["plain_extrapolated"] else ""
            row += [f"{entry['ours_s']:.3f}", f"{entry['plain_s']:.2f}{star}",
                    f"{entry['plain_s'] / entry['ours_s']:.1f}×"]
        ours.rows.append(row)
    ours.notes.append(f"* extrapolated from {tv_iterations} iterations of the straightforward TV")
    sections = [ours]
    if any(result["relion"].values()):
        labels = list(next(v for v in result["relion"].values() if v))
        peer = Section(
            title="relion_image_handler on the same micrographs",
            intro="Seconds per micrograph; RELION reads and writes MRC files, so its times "
                  "include file I/O (the mrcfile round trip alone is the first row).",
            header=["command", *sizes],
            rows=[[label, *(f"{result['relion'][s].get(label, float('nan')):.3f}"
                            for s in sizes)] for label in labels],
        )
        sections.append(peer)
    sections.append(streaming_throughput())
    return sections


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tv-iterations", type=int, default=5,
                        help="iterations of the straightforward TV, extrapolated to 50")
    parser.add_argument("--no-relion", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = measure(args.repeat, args.tv_iterations, not args.no_relion)
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
