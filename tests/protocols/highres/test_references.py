"""The next iteration's references: positivity only for a non-negative density (issue 9)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cryoweave.engine import to_host
from cryoweave.protocols.highres._references import (
    POSITIVITY_MAX_NEGATIVE_MASS,
    ReferenceOptions,
    negative_mass_fraction,
    positivity_record,
    prepare_reference,
)

BOX_PX = 32
PIXEL_A = 3.0


def blobs(signs: list[float]) -> np.ndarray:
    """Gaussian blobs (σ 2.5 px) at fixed places inside the sphere, of the given signs."""
    rng = np.random.default_rng(4)
    grid = np.indices((BOX_PX,) * 3) - BOX_PX // 2
    volume = np.zeros((BOX_PX,) * 3)
    for sign in signs:
        centre = rng.uniform(-7, 7, 3)
        distance2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
        volume += sign * np.exp(-distance2 / (2 * 2.5**2))
    return volume.astype(np.float32)


def prepared(xp, volume: np.ndarray, positivity: bool = True):
    return prepare_reference(xp.asarray(volume), PIXEL_A, box_px=BOX_PX,
                             working_pixel_a=PIXEL_A, lowpass_resolution_a=15.0,
                             previous_fsc=None,
                             options=dataclasses.replace(ReferenceOptions(),
                                                         positivity=positivity))


def test_negative_mass_fraction(xp):
    assert negative_mass_fraction(xp.asarray(blobs([1, 1, 1]))) == 0.0
    assert negative_mass_fraction(xp.zeros((4, 4, 4), xp.float32)) == 0.0
    signed = negative_mass_fraction(xp.asarray(blobs([1, -1, 1, -1])))
    assert signed == pytest.approx(0.5, abs=0.05)
    noise = np.random.default_rng(0).standard_normal((16, 16, 16)).astype(np.float32)
    assert negative_mass_fraction(xp.asarray(noise)) == pytest.approx(0.5, abs=0.02)


def test_a_non_negative_density_gets_positivity(xp):
    reference, negative_mass = prepared(xp, blobs([1, 1, 1]))
    # the low-pass rings a little below zero; positivity clips that
    assert 0 < negative_mass < POSITIVITY_MAX_NEGATIVE_MASS
    assert float(reference.min()) == 0.0
    unclipped, _ = prepared(xp, blobs([1, 1, 1]), positivity=False)
    assert float(unclipped.min()) < 0
    assert positivity_record(negative_mass)["applied"]


def test_a_density_with_negative_structure_keeps_it(xp):
    """A map with real negative density (normalised to zero mean, as the ribosome of the
    `make validate` case): positivity would drop half its mass, so it is not applied."""
    volume = blobs([1, -1, 1, -1, 1])
    reference, negative_mass = prepared(xp, volume)
    assert negative_mass >= POSITIVITY_MAX_NEGATIVE_MASS
    unclipped, none = prepared(xp, volume, positivity=False)
    assert none is None
    np.testing.assert_array_equal(to_host(reference), to_host(unclipped))
    assert negative_mass_fraction(reference) == pytest.approx(negative_mass)
    assert not positivity_record(negative_mass)["applied"]
