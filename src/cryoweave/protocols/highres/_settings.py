"""ReconstructHighRes's settings as frozen dataclasses, and their JSON form for the steps.

A step receives its settings as JSON (step arguments are JSON, and the runner hashes them to
skip finished steps on ``--continue``). ``to_json`` gives exactly the dicts the steps received
before these classes existed (same keys, same values), so a run planned by an earlier version
continues without redoing its steps; ``from_json`` reads them back (missing keys take the
defaults, as the old ``settings.get(...)`` look-ups did). Every physical quantity carries its
unit in its name (``_deg``, ``_a``, ``_px``, ``_percent``); the rest are fractions, flags,
names or paths.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from cryoweave.protocols.highres._weights import WeightOptions

if TYPE_CHECKING:
    from cryoweave.protocols.highres.protocol import ReconstructHighRes

T = TypeVar("T")
OMIT_IF_NONE = {"omit_if_none": True}  # field metadata: a key the JSON has only when set


def to_json(settings: Any) -> dict[str, Any]:
    """The JSON form of a settings dataclass (nested ones too; tuples become lists)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if value is None and f.metadata.get("omit_if_none"):
            continue
        if dataclasses.is_dataclass(value):
            value = to_json(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def from_json(cls: type[T], data: typing.Mapping[str, Any]) -> T:
    """``cls`` from its JSON form (``to_json``); keys ``cls`` does not have are ignored."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in data:
            continue
        value = data[f.name]
        kind = hints[f.name]
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            value = from_json(kind, value)
        elif isinstance(value, list):
            value = tuple(value)
        values[f.name] = value
    return cls(**values)


@dataclass(frozen=True)
class LocalSettings:
    """What local alignment refines besides the poses, and within which limits."""

    shifts: bool
    angles: bool
    max_shift_percent: float  # of the working box
    scale: bool
    max_scale_change: float  # fraction
    defocus: bool
    max_defocus_change_a: float
    gray: bool
    max_gray_scale_change: float  # fraction
    max_gray_offset_sigma: float  # in standard deviations of the image


@dataclass(frozen=True)
class ReferenceSettings:
    """How the next iteration's references are made (``ReferenceOptions`` at the step)."""

    lowpass: bool
    spherical_mask: bool
    positivity: bool
    dropout: float  # fraction of voxels


@dataclass(frozen=True)
class RefinementSettings:
    """The static settings every step of a refinement receives."""

    symmetry: str
    alignment: str  # the run's mode: automatic, global, local, stochastic or none
    min_tilt_deg: float
    max_tilt_deg: float
    max_shift_percent: float  # of the working box
    local: LocalSettings
    weights: WeightOptions
    reference: ReferenceSettings
    resolution_criterion: float
    regularization: float
    seed: int
    stochastic_alpha: float
    final_map_weights: str = "unit"  # or "refinement"
    final_reconstruction: str = "best_pose"  # or "marginal" (runs planned before it: best pose)
    restrict_tilt_deg: tuple[float, float] | None = None  # (min, max) of the maps' particles
    adhoc_mask: str | None = None  # path of the FSC mask
    mask: str | None = None  # path of the reference mask
    post_script: str | None = None
    particles_set_id: int | None = field(default=None, metadata=OMIT_IF_NONE)
    alignment_now: str | None = field(default=None, metadata=OMIT_IF_NONE)  # this iteration's


def settings_of(params: ReconstructHighRes.Params, mask_path: str | None,
                adhoc_path: str | None) -> RefinementSettings:
    """The static settings of a run with ``params``."""
    return RefinementSettings(
        symmetry=params.symmetry, alignment=params.alignment,
        min_tilt_deg=params.min_tilt_deg, max_tilt_deg=params.max_tilt_deg,
        max_shift_percent=params.max_shift_percent,
        local=LocalSettings(
            shifts=params.local_shifts, angles=params.local_angles,
            max_shift_percent=params.local_max_shift_percent,
            scale=params.local_scale, max_scale_change=params.local_max_scale_change,
            defocus=params.local_defocus,
            max_defocus_change_a=params.local_max_defocus_change_a, gray=params.local_gray,
            max_gray_scale_change=params.local_max_gray_scale_change,
            max_gray_offset_sigma=params.local_max_gray_offset_sigma),
        weights=WeightOptions(
            cc_percentile=params.weight_cc_percentile,
            angular_stability=params.weight_angular_stability, ssnr=params.weight_ssnr,
            continuous=params.weight_continuous, min_cc_weight=params.min_cc_weight),
        final_map_weights=params.final_map_weights,
        final_reconstruction=params.final_reconstruction,
        reference=ReferenceSettings(
            lowpass=params.next_lowpass, spherical_mask=params.next_spherical_mask,
            positivity=params.next_positivity, dropout=params.next_dropout),
        resolution_criterion=params.resolution_criterion,
        regularization=params.regularization, seed=params.seed,
        stochastic_alpha=params.stochastic_alpha,
        restrict_tilt_deg=((params.restrict_tilt_min_deg, params.restrict_tilt_max_deg)
                           if params.restrict_reconstruction_tilt else None),
        adhoc_mask=adhoc_path, mask=mask_path, post_script=params.post_script)
