"""The finite ranges a real instrument and real data can have — one place for every bound.

Protocol parameters declare them (``param(..., **PIXEL_SIZE_A.bounds())`` puts ``minimum`` /
``maximum`` into the JSON Schema of ``cryoweave form NAME`` and into the generated docs) and
the file readers check every physical column against them at import. Values outside these
ranges are typing errors (``1e308``, ``-4``, ``0``, ``Infinity``), never real data.

========================  ======  ===================  ==========================================
quantity                  unit    range                why
========================  ======  ===================  ==========================================
pixel size                Å       0.1 – 100            super-resolution ≈ 0.2 Å, binned screening
                                                       data ≈ 20 Å; 100 leaves room
acceleration voltage      kV      10 – 1000            instruments run at 60–300 kV
spherical aberration      mm      0 – 20               0 for Cs-corrected microscopes, 0.01–8
amplitude contrast        –       0 – <1               a fraction; 0.07–0.1 for ice
defocus                   Å       −100 000 – 200 000   ±10 µm overfocus, 20 µm underfocus
defocus / Euler angles    °       −720 – 720           any convention (±180, 0–360) with margin
phase shift               °       −720 – 720           phase plates drift up to ~180°
CTF B-factor              Å²      −10 000 – 10 000
CTF scale                 –       0 – 100
shift (origin)            Å       −10 000 – 10 000     1 µm, far beyond any box
coordinate                px      −100 000 – 1 000 000 detectors are ≤ 24 k px (×2 super-res.)
detector pixel size       µm      0.1 – 1000           rlnDetectorPixelSize (RELION 3.0)
magnification             –       100 – 10 000 000     rlnMagnification (RELION 3.0)
resolution                Å       0.1 – 10 000         low-pass limits and resolution floors
resolution offset         Å       0 – 1000
regularization            –       0 – 1000             Wiener constant relative to the mean weight
signal-to-noise ratio     –       >0 – 1 000 000
defocus change/astigm.    Å       0 – 100 000
========================  ======  ===================  ==========================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy is imported on use: the store imports OPTICS_COLUMNS from here
    import numpy as np


@dataclass(frozen=True)
class PhysicalRange:
    """A closed (or half-open) finite interval of one physical quantity."""

    quantity: str
    unit: str
    low: float
    high: float
    low_open: bool = False  # the low end itself is excluded (> low)
    high_open: bool = False  # the high end itself is excluded (< high)

    def bounds(self) -> dict[str, float]:
        """pydantic constraints for ``param(...)``: ``ge``/``gt`` and ``le``/``lt``."""
        return {("gt" if self.low_open else "ge"): self.low,
                ("lt" if self.high_open else "le"): self.high}

    def contains(self, value: float) -> bool:
        import numpy as np

        return bool(self.inside(np.asarray([value], dtype=np.float64))[0])

    def inside(self, values: np.ndarray) -> np.ndarray:
        """Elementwise :meth:`contains` (NaN and ±inf are outside)."""
        import numpy as np

        with np.errstate(invalid="ignore"):
            above = values > self.low if self.low_open else values >= self.low
            below = values < self.high if self.high_open else values <= self.high
        return np.isfinite(values) & above & below

    def describe(self) -> str:
        """``0.1 ≤ value ≤ 100 Å`` — what error messages say was expected."""
        low = f"{self.low:g} {'<' if self.low_open else '≤'}"
        high = f"{'<' if self.high_open else '≤'} {self.high:g}"
        unit = f" {self.unit}" if self.unit else ""
        return f"a finite {self.quantity} with {low} value {high}{unit}"


PIXEL_SIZE_A = PhysicalRange("pixel size", "Å", 0.1, 100.0)
VOLTAGE_KV = PhysicalRange("acceleration voltage", "kV", 10.0, 1000.0)
CS_MM = PhysicalRange("spherical aberration", "mm", 0.0, 20.0)
AMPLITUDE_CONTRAST = PhysicalRange("amplitude contrast", "", 0.0, 1.0, high_open=True)
DEFOCUS_A = PhysicalRange("defocus", "Å", -100_000.0, 200_000.0)
ANGLE_DEG = PhysicalRange("angle", "°", -720.0, 720.0)
PHASE_SHIFT_DEG = PhysicalRange("phase shift", "°", -720.0, 720.0)
CTF_BFACTOR_A2 = PhysicalRange("CTF B-factor", "Å²", -10_000.0, 10_000.0)
CTF_SCALE = PhysicalRange("CTF scale", "", 0.0, 100.0)
SHIFT_A = PhysicalRange("shift", "Å", -10_000.0, 10_000.0)
COORDINATE_PX = PhysicalRange("coordinate", "px", -100_000.0, 1_000_000.0)
DETECTOR_PIXEL_SIZE_UM = PhysicalRange("detector pixel size", "µm", 0.1, 1000.0)
MAGNIFICATION = PhysicalRange("magnification", "", 100.0, 10_000_000.0)
RESOLUTION_A = PhysicalRange("resolution", "Å", 0.1, 10_000.0)
RESOLUTION_OFFSET_A = PhysicalRange("resolution offset", "Å", 0.0, 1000.0)
REGULARIZATION = PhysicalRange("regularization", "", 0.0, 1000.0)
SNR = PhysicalRange("signal-to-noise ratio", "", 0.0, 1_000_000.0, low_open=True)
DEFOCUS_CHANGE_A = PhysicalRange("defocus difference", "Å", 0.0, 100_000.0)

# not physical, but bounded the same way: images per batch of a step (far above what memory
# allows, low enough to refuse a typing error such as 2**70)
MAX_BATCH_IMAGES = 100_000
# iterations of the reconstruction's gridding weights (relion_reconstruct's default is 10; the
# weights have converged long before this)
MAX_GRIDDING_ITERATIONS = 100
# iterations of the micrographs' TV denoising (Xmipp's default is 50)
MAX_DENOISE_ITERATIONS = 10_000

# typed particle / optics columns (see formats._table) → their range
PARTICLE_COLUMN_RANGES: dict[str, PhysicalRange] = {
    "coord_x_px": COORDINATE_PX,
    "coord_y_px": COORDINATE_PX,
    "defocus_u_a": DEFOCUS_A,
    "defocus_v_a": DEFOCUS_A,
    "defocus_angle_deg": ANGLE_DEG,
    "phase_shift_deg": PHASE_SHIFT_DEG,
    "ctf_bfactor": CTF_BFACTOR_A2,
    "ctf_scale": CTF_SCALE,
    "rot_deg": ANGLE_DEG,
    "tilt_deg": ANGLE_DEG,
    "psi_deg": ANGLE_DEG,
    "shift_x_a": SHIFT_A,
    "shift_y_a": SHIFT_A,
}
# The typed optics-group columns, in this order everywhere (project database, STAR/.cs readers,
# particle arrays): the one list. OPTICS_VALUE_COLUMNS are the physical values of a group.
OPTICS_COLUMNS: tuple[str, ...] = ("group_id", "name", "pixel_size_a", "box_px", "voltage_kv",
                                   "cs_mm", "amplitude_contrast")
OPTICS_VALUE_COLUMNS: tuple[str, ...] = OPTICS_COLUMNS[2:]
OPTICS_COLUMN_RANGES: dict[str, PhysicalRange] = {
    "pixel_size_a": PIXEL_SIZE_A,
    "voltage_kv": VOLTAGE_KV,
    "cs_mm": CS_MM,
    "amplitude_contrast": AMPLITUDE_CONTRAST,
}

# RELION 3.0 columns the pixel size derives from (rlnDetectorPixelSize × 10⁴ / rlnMagnification)
RELION30_COLUMN_RANGES: dict[str, PhysicalRange] = {
    "rlnDetectorPixelSize": DETECTOR_PIXEL_SIZE_UM,
    "rlnMagnification": MAGNIFICATION,
}

