"""The in-memory particle table every reader produces and every writer takes.

Particles carry cryoweave's typed column names (units in the names, shifts in Å, a 0-based
``image_index``, absolute ``image_path``); columns we do not interpret keep their RELION label
and their position, so a STAR file read and written again loses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cryoweave.physical import OPTICS_COLUMNS

if TYPE_CHECKING:  # loads on first use: light commands do not need it
    import pandas as pd

# RELION particle label -> typed column (rlnImageName and 3.0 pixel origins are special-cased).
PARTICLE_LABELS = {
    "rlnMicrographName": "micrograph_name",
    "rlnCoordinateX": "coord_x_px",
    "rlnCoordinateY": "coord_y_px",
    "rlnDefocusU": "defocus_u_a",
    "rlnDefocusV": "defocus_v_a",
    "rlnDefocusAngle": "defocus_angle_deg",
    "rlnPhaseShift": "phase_shift_deg",
    "rlnCtfBfactor": "ctf_bfactor",
    "rlnCtfScalefactor": "ctf_scale",
    "rlnAngleRot": "rot_deg",
    "rlnAngleTilt": "tilt_deg",
    "rlnAnglePsi": "psi_deg",
    "rlnOriginXAngst": "shift_x_a",
    "rlnOriginYAngst": "shift_y_a",
    "rlnOpticsGroup": "optics_group",
    "rlnRandomSubset": "half",
}
TYPED_TO_LABEL = {v: k for k, v in PARTICLE_LABELS.items()}
IMAGE_LABEL = "rlnImageName"
PIXEL_ORIGIN_LABELS = {"rlnOriginX": "shift_x_a", "rlnOriginY": "shift_y_a"}  # RELION 3.0

# Optics label -> typed optics column (the columns are cryoweave.physical.OPTICS_COLUMNS).
OPTICS_LABELS = dict(zip(
    ("rlnOpticsGroup", "rlnOpticsGroupName", "rlnImagePixelSize", "rlnImageSize", "rlnVoltage",
     "rlnSphericalAberration", "rlnAmplitudeContrast"), OPTICS_COLUMNS, strict=True))
OPTICS_TO_LABEL = {v: k for k, v in OPTICS_LABELS.items()}
# RELION 3.0 keeps these per particle; 3.1 moves them to data_optics.
RELION30_OPTICS_LABELS = ["rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast",
                          "rlnMagnification", "rlnDetectorPixelSize", "rlnImagePixelSize"]

# Typed particle columns in the order new ones are appended when writing.
TYPED_PARTICLE_ORDER = ["image_path", "micrograph_name", "coord_x_px", "coord_y_px",
                        "defocus_u_a", "defocus_v_a", "defocus_angle_deg", "phase_shift_deg",
                        "ctf_bfactor", "ctf_scale", "optics_group", "rot_deg", "tilt_deg",
                        "psi_deg", "shift_x_a", "shift_y_a", "half"]


@dataclass
class ParticleTable:
    """Particles and their optics groups, plus the original column order.

    ``particles``: typed columns (``image_path`` absolute, ``image_index`` 0-based, shifts in
    Å, ``optics_group``) and pass-through columns under their RELION labels.
    ``optics``: ``group_id``, ``name``, ``pixel_size_a``, ``box_px``, ``voltage_kv``,
    ``cs_mm``, ``amplitude_contrast`` plus pass-through optics labels.
    ``particle_labels`` / ``optics_labels``: the labels in the order the source had them.
    ``image_index_width``: zero-padding of the index in ``index@path`` (0 = none).
    """

    particles: pd.DataFrame
    optics: pd.DataFrame
    particle_labels: list[str] = field(default_factory=list)
    optics_labels: list[str] = field(default_factory=list)
    relion_version: str = "3.1"
    image_index_width: int = 6
    source: Path | None = None

    def __len__(self) -> int:
        return len(self.particles)

    def pixel_sizes(self) -> dict[int, float | None]:
        """Pixel size (Å) of each optics group."""
        import pandas as pd

        return {int(g): (None if pd.isna(p) else float(p))
                for g, p in zip(self.optics["group_id"], self.optics["pixel_size_a"],
                                strict=True)}

    def star_layout(self) -> dict[str, list[str]]:
        """The original label orders, for set properties (JSON-serialisable)."""
        return {"particle_labels": list(self.particle_labels),
                "optics_labels": list(self.optics_labels),
                "image_index_width": self.image_index_width,
                "relion_version": self.relion_version}
