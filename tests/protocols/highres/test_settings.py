"""ReconstructHighRes settings: frozen dataclasses whose JSON form is the steps' arguments.

The runner hashes step arguments to skip finished steps on --continue, so the JSON keys are a
contract with every run planned before: the key lists below are those of the dicts the steps
received before the dataclasses existed.
"""

from __future__ import annotations

import dataclasses

import pytest

from cryoweave.protocols.highres._schedule import IterationSchedule, schedule_iteration
from cryoweave.protocols.highres._settings import (
    LocalSettings,
    ReferenceSettings,
    RefinementSettings,
    from_json,
    to_json,
)
from cryoweave.protocols.highres._weights import WeightOptions

SETTINGS_KEYS = ["symmetry", "alignment", "min_tilt_deg", "max_tilt_deg", "max_shift_percent",
                 "local", "weights", "reference", "resolution_criterion", "regularization",
                 "seed", "stochastic_alpha", "final_map_weights", "final_reconstruction",
                 "restrict_tilt_deg",
                 "adhoc_mask", "mask", "post_script"]
LOCAL_KEYS = ["shifts", "angles", "max_shift_percent", "scale", "max_scale_change", "defocus",
              "max_defocus_change_a", "gray", "max_gray_scale_change", "max_gray_offset_sigma"]
SCHEDULE_KEYS = ["index", "alignment", "previous_resolution_a", "target_resolution_a",
                 "pixel_size_a", "box_px", "angular_step_deg", "local_max_angle_deg",
                 "max_shift_px"]


def _settings() -> RefinementSettings:
    return RefinementSettings(
        symmetry="c2", alignment="automatic", min_tilt_deg=0.0, max_tilt_deg=180.0,
        max_shift_percent=10.0,
        local=LocalSettings(shifts=True, angles=True, max_shift_percent=5.0, scale=False,
                            max_scale_change=0.02, defocus=True, max_defocus_change_a=500.0,
                            gray=False, max_gray_scale_change=0.1, max_gray_offset_sigma=0.5),
        weights=WeightOptions(ssnr=True, min_cc_weight=0.2),
        reference=ReferenceSettings(lowpass=True, spherical_mask=False, positivity=True,
                                    dropout=0.1),
        resolution_criterion=0.5, regularization=0.01, seed=7, stochastic_alpha=0.1,
        restrict_tilt_deg=(80.0, 100.0), mask="/m.mrc", particles_set_id=3,
        alignment_now="global")


def test_settings_json_has_the_old_keys_and_round_trips():
    settings = _settings()
    data = to_json(settings)
    assert list(data) == [*SETTINGS_KEYS, "particles_set_id", "alignment_now"]
    assert list(data["local"]) == LOCAL_KEYS
    assert data["weights"] == {"cc_percentile": True, "angular_stability": False, "ssnr": True,
                               "continuous": False, "min_cc_weight": 0.2}
    assert data["restrict_tilt_deg"] == [80.0, 100.0]  # JSON has lists, not tuples
    assert from_json(RefinementSettings, data) == settings


def test_keys_set_later_are_absent_until_set_and_old_settings_take_the_defaults():
    settings = dataclasses.replace(_settings(), particles_set_id=None, alignment_now=None)
    data = to_json(settings)
    assert list(data) == SETTINGS_KEYS  # the finalize step never had alignment_now
    for key in ("final_map_weights", "final_reconstruction", "restrict_tilt_deg", "adhoc_mask",
                "post_script"):
        del data[key]  # (read with .get() before: runs planned earlier may lack them)
    old = from_json(RefinementSettings, data)
    assert old.final_map_weights == "unit" and old.restrict_tilt_deg is None
    assert old.final_reconstruction == "best_pose"  # what the runs planned before it did
    assert old.adhoc_mask is None and old.post_script is None and old.alignment_now is None


def test_schedule_json_grows_as_the_plan_and_the_prepare_step_fill_it():
    schedule = schedule_iteration(2, "stochastic", 10.0, original_pixel_a=1.5,
                                  original_box_px=96, floor_a=4.0, offset_a=3.0,
                                  multiresolution=True, max_shift_percent=10.0)
    assert list(schedule.to_json()) == SCHEDULE_KEYS
    planned = dataclasses.replace(schedule, particle_radius_px=20.0, stochastic_rows=(1, 5))
    assert list(planned.to_json()) == [*SCHEDULE_KEYS, "particle_radius_px", "stochastic_rows"]
    written = dataclasses.replace(planned, stack="/cache/s.mrcs", seconds=1.5).to_json()
    assert written["stochastic_rows"] == [1, 5]
    assert list(written)[-2:] == ["stack", "seconds"]
    assert IterationSchedule.from_json(written) == dataclasses.replace(
        planned, stack="/cache/s.mrcs", seconds=1.5)


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        _settings().symmetry = "c1"  # type: ignore[misc]
