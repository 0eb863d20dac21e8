"""The multiresolution schedule follows the spec's formulas."""

from __future__ import annotations

import math

import pytest

from cryoweave.protocols.highres._schedule import (
    alignment_of,
    default_iterations,
    first_lowpass_a,
    parse_floors,
    schedule_iteration,
    starting_resolution_a,
)


def test_floors_parse_repeats_and_pad():
    assert parse_floors("15 8 4", 5) == [15, 8, 4, 4, 4]
    assert parse_floors("2x15 8", 4) == [15, 15, 8, 8]
    assert parse_floors("10", 2) == [10, 10]
    for bad in ("", "x", "0 5", "3xa"):
        with pytest.raises(ValueError, match="max_target_resolution_a"):
            parse_floors(bad, 3)


def test_alignment_modes():
    assert [alignment_of("automatic", i) for i in range(1, 6)] == ["global"] * 3 + ["local"] * 2
    assert default_iterations("automatic") == 5 and default_iterations("none") == 1
    assert default_iterations("global") == 3
    assert starting_resolution_a("global", 2.0) == 8.0
    assert starting_resolution_a("local", 1.8) == pytest.approx(4.0)


def test_global_iteration_numbers():
    # X = 96 px at 1.5 Å; previous resolution 6 Å (= 4·Ts0), floor 15 Å, offset 2 Å
    it = schedule_iteration(1, "global", 6.0, original_pixel_a=1.5, original_box_px=96,
                            floor_a=15.0, offset_a=2.0, multiresolution=True,
                            max_shift_percent=10)
    assert it.target_resolution_a == 15.0  # max(0.5·6, 15)
    # Ts = max(1.5, 15/3) = 5 → box round(96·1.5/5) = 29 → even 30 → at least 40
    assert it.box_px == 40 and it.pixel_size_a == pytest.approx(1.5 * 96 / 40)
    k = 40 * it.pixel_size_a / (6.0 + 2.0)
    assert it.angular_step_deg == pytest.approx(max(3.0, math.degrees(math.atan(1 / k))))
    assert it.local_max_angle_deg == pytest.approx(3 * math.degrees(math.atan(1 / k)))
    assert it.max_shift_px == pytest.approx(4.0)


def test_local_iteration_and_no_multiresolution():
    it = schedule_iteration(4, "local", 5.0, original_pixel_a=1.0, original_box_px=128,
                            floor_a=2.0, offset_a=2.0, multiresolution=True,
                            max_shift_percent=10)
    assert it.target_resolution_a == pytest.approx(4.0)  # 0.8 · 5
    assert it.box_px == 96  # Ts = 4/3 → 96 px
    fixed = schedule_iteration(1, "global", 8.0, original_pixel_a=1.0, original_box_px=128,
                               floor_a=15.0, offset_a=2.0, multiresolution=False,
                               max_shift_percent=10)
    assert (fixed.box_px, fixed.pixel_size_a) == (128, 1.0)
    # k = 128·1 / (8 + 2) = 12.8 → atan(1/12.8) = 4.47°, above the 3° minimum
    assert fixed.angular_step_deg == pytest.approx(math.degrees(math.atan(1 / 12.8)))
    fine = schedule_iteration(5, "local", 2.0, original_pixel_a=1.0, original_box_px=256,
                              floor_a=1.0, offset_a=1.0, multiresolution=True,
                              max_shift_percent=10)
    assert fine.angular_step_deg == 3.0  # k = 256/3 → 0.67°, clipped to the 3° minimum


def test_initial_resolution_starts_the_schedule_and_sets_the_first_lowpass():
    """RELION's --ini_high: iteration 1 starts from it and its references are low-passed to
    it exactly (not resolution + offset), whatever next_lowpass says."""
    assert starting_resolution_a("global", 2.0, 30.0) == 30.0
    assert starting_resolution_a("local", 2.0, None) == pytest.approx(2.0 / 0.45)
    assert first_lowpass_a(30.0, 2.0, True, 30.0) == 30.0
    assert first_lowpass_a(30.0, 2.0, False, 30.0) == 30.0
    assert first_lowpass_a(8.0, 2.0, True, None) == 10.0
    assert first_lowpass_a(8.0, 2.0, False, None) is None
    it = schedule_iteration(1, "global", starting_resolution_a("global", 1.5, 40.0),
                            original_pixel_a=1.5, original_box_px=96, floor_a=8.0,
                            offset_a=2.0, multiresolution=True, max_shift_percent=10)
    # target max(0.5·40, 8) = 20 Å → Ts = 20/3 → box round(96·1.5·3/20) = 22 → at least 40
    assert it.previous_resolution_a == 40.0 and it.target_resolution_a == 20.0
    assert it.box_px == 40
