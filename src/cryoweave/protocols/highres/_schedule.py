"""The multiresolution schedule of ReconstructHighRes (spec: "The iteration", step 1).

For iteration i, with the previous resolution ``prev`` (Å):
target = max(0.5·prev, floor_i) after global-type alignment, max(0.8·prev, floor_i) after
local/none; working pixel Ts = max(Ts_orig, target/3); box = round(X·Ts_orig/Ts) made even
and ≥ 40 (never above X), Ts recomputed from the box; global angular step =
max(3°, atan(1/k)) and local max angular change = 3·atan(1/k), with k = box·Ts/(prev + offset).
The starting reference's resolution is 4·Ts_orig (global) or Ts_orig/0.45 (local), or the
user's ``initial_resolution_a`` (RELION's ``--ini_high``), to which the initial references are
then low-passed exactly (instead of resolution + offset).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryoweave.physical import RESOLUTION_A
from cryoweave.protocols.highres._settings import OMIT_IF_NONE, from_json, to_json

GLOBAL_TYPES = ("global", "stochastic")
MIN_BOX_PX = 40
MIN_STEP_DEG = 3.0
MAX_ITERATIONS = 100  # RELION's auto-refine converges in 10–30
MAX_REPEAT = 1000  # 'NxV': more iterations than any run has


def parse_floors(text: str, iterations: int) -> list[float]:
    """Per-iteration resolution floors from "15 8 4" or "2x15 8" (last value repeated)."""
    values: list[float] = []
    for token in text.replace(",", " ").split():
        match = re.fullmatch(r"(\d+)[xX](\d+(?:\.\d*)?)", token)
        try:
            if match:
                values += [float(match.group(2))] * min(int(match.group(1)), MAX_REPEAT)
            else:
                values.append(float(token))
        except ValueError as exc:
            raise ValueError(f"max_target_resolution_a={text!r}: cannot read {token!r}; use "
                             "numbers in Å and NxV repeats, e.g. '15 8 4' or '2x15 8'") from exc
    if not values or any(not RESOLUTION_A.contains(v) for v in values):
        raise ValueError(f"max_target_resolution_a={text!r}: give resolutions in Å, each "
                         f"{RESOLUTION_A.describe()}")
    return (values + [values[-1]] * iterations)[:iterations]


def alignment_of(mode: str, index: int) -> str:
    """The alignment of iteration ``index`` (1-based): automatic = global 1–3, local after."""
    if mode == "automatic":
        return "global" if index <= 3 else "local"
    return mode


def default_iterations(mode: str) -> int:
    return {"automatic": 5, "none": 1}.get(mode, 3)


def starting_resolution_a(mode: str, pixel_size_a: float,
                          initial_resolution_a: float | None = None) -> float:
    """The resolution (Å) iteration 1 starts from: ``initial_resolution_a`` when given, else
    4·pixel (global-type first iteration) or pixel/0.45 (local)."""
    if initial_resolution_a is not None:
        return float(initial_resolution_a)
    first = alignment_of(mode, 1)
    return 4 * pixel_size_a if first in (*GLOBAL_TYPES, "none") else pixel_size_a / 0.45


@dataclass(frozen=True)
class IterationSchedule:
    index: int
    alignment: str
    previous_resolution_a: float
    target_resolution_a: float
    pixel_size_a: float  # working pixel size Ts
    box_px: int  # working box
    angular_step_deg: float  # global search step
    local_max_angle_deg: float  # local search range
    max_shift_px: float  # at the working pixel size
    # set by the plan:
    particle_radius_px: float | None = field(default=None, metadata=OMIT_IF_NONE)
    stochastic_rows: tuple[int, ...] | None = field(default=None, metadata=OMIT_IF_NONE)
    # set by the prepare step (schedule.json):
    stack: str | None = field(default=None, metadata=OMIT_IF_NONE)  # the working-box stack
    seconds: float | None = field(default=None, metadata=OMIT_IF_NONE)  # prepare's time

    def to_json(self) -> dict[str, Any]:
        return to_json(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> IterationSchedule:
        return from_json(cls, data)


def schedule_iteration(index: int, alignment: str, previous_resolution_a: float, *,
                       original_pixel_a: float, original_box_px: int, floor_a: float,
                       offset_a: float, multiresolution: bool,
                       max_shift_percent: float) -> IterationSchedule:
    factor = 0.5 if alignment in GLOBAL_TYPES else 0.8
    target = max(factor * previous_resolution_a, floor_a)
    if multiresolution:
        pixel = max(original_pixel_a, target / 3)
        box = round(original_box_px * original_pixel_a / pixel)
        box += box % 2
        box = min(max(box, MIN_BOX_PX), original_box_px - original_box_px % 2)
        pixel = original_pixel_a * original_box_px / box
    else:
        box, pixel = original_box_px, original_pixel_a
    k = box * pixel / (previous_resolution_a + offset_a)
    step = max(MIN_STEP_DEG, math.degrees(math.atan(1 / k)))
    return IterationSchedule(index, alignment, previous_resolution_a, target, pixel, box, step,
                             3 * math.degrees(math.atan(1 / k)),
                             max_shift_percent / 100 * box)


def first_lowpass_a(previous_resolution_a: float, offset_a: float, next_lowpass: bool,
                    initial_resolution_a: float | None) -> float | None:
    """The low-pass (Å) of iteration 1's references: ``initial_resolution_a`` when given
    (always, as RELION's ``--ini_high``), else previous + offset when ``next_lowpass``."""
    if initial_resolution_a is not None:
        return float(initial_resolution_a)
    return previous_resolution_a + offset_a if next_lowpass else None
