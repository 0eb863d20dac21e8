"""FSC/FRC against an explicit full-spectrum loop, invariants, and resolution read-outs."""

from __future__ import annotations

import numpy as np
import pytest

from cryoweave.engine._fsc import FscCurve, fsc


def _reference_fsc(a, b):
    """Obviously correct: full complex FFT, explicit shell loop (conventions.md formula)."""
    n = a.shape[0]
    f1, f2 = np.fft.fftn(a), np.fft.fftn(b)
    k = np.fft.fftfreq(n) * n
    grids = np.meshgrid(*([k] * a.ndim), indexing="ij")
    shells = np.rint(np.sqrt(sum(g * g for g in grids))).astype(int)
    values = []
    for s in range(n // 2 + 1):
        sel = shells == s
        num = np.sum((f1[sel] * np.conj(f2[sel])).real)
        values.append(num / np.sqrt(np.sum(np.abs(f1[sel]) ** 2) * np.sum(np.abs(f2[sel]) ** 2)))
    return np.array(values), np.array([np.sum(shells == s) for s in range(n // 2 + 1)])


@pytest.mark.parametrize("shape", [(12, 12, 12), (11, 11, 11), (16, 16), (15, 15)])
def test_against_reference(shape):
    rng = np.random.default_rng(0)
    a = rng.standard_normal(shape)
    b = a + 0.7 * rng.standard_normal(shape)
    curve = fsc(a, b, pixel_size_a=1.5)
    values, counts = _reference_fsc(a, b)
    np.testing.assert_allclose(curve.values, values, atol=1e-12)
    np.testing.assert_array_equal(curve.counts, counts)
    n = shape[0]
    np.testing.assert_allclose(curve.frequency_per_a, np.arange(n // 2 + 1) / (n * 1.5))


def test_invariants(xp):
    rng = np.random.default_rng(1)
    a = xp.asarray(rng.standard_normal((10, 10, 10)))
    np.testing.assert_allclose(fsc(a, a).values, 1.0)
    np.testing.assert_allclose(fsc(a, -3.0 * a).values, -1.0)
    np.testing.assert_allclose(fsc(a, 2.5 * a).values, 1.0)
    mask = xp.ones((10, 10, 10))
    np.testing.assert_allclose(fsc(a, a * 2, mask=mask).values, 1.0)


def test_independent_noise_is_near_zero():
    rng = np.random.default_rng(2)
    curve = fsc(rng.standard_normal((32, 32, 32)), rng.standard_normal((32, 32, 32)))
    # shell s of a 32³ box holds ≥ ~100 voxels from s = 3: |FSC| ~ 1/sqrt(count)
    assert np.all(np.abs(curve.values[3:]) < 5 / np.sqrt(curve.counts[3:]))


def test_resolution_readouts_by_hand():
    freq = np.arange(6) / (10 * 2.0)  # N = 10, 2 Å/px: shells 0 … 5 at 0, 0.05, … 0.25 /Å
    curve = FscCurve(np.arange(6), freq, np.array([1.0, 0.9, 0.6, 0.4, 0.1, 0.05]),
                     np.ones(6, dtype=int))
    # first shell below 0.5 is shell 3 (0.15/Å): Xmipp-style 1/0.15 = 6.667 Å
    assert curve.resolution_a(0.5, method="first_below") == pytest.approx(1 / 0.15)
    # crossing between 0.6 @ 0.10 and 0.4 @ 0.15 -> 0.125/Å = 8 Å
    assert curve.resolution_a(0.5) == pytest.approx(8.0)
    # 0.143 crossing between 0.4 @ 0.15 and 0.1 @ 0.20: 0.15 + 0.257/0.3·0.05
    assert curve.resolution_a(0.143) == pytest.approx(1 / (0.15 + (0.4 - 0.143) / 0.3 * 0.05))
    assert curve.resolution_a(0.01) == pytest.approx(4.0)  # never below: the last shell
    with pytest.raises(ValueError, match="method"):
        curve.resolution_a(0.5, method="nearest")


def test_shape_errors():
    with pytest.raises(ValueError, match="same shape"):
        fsc(np.zeros((8, 8, 8)), np.zeros((8, 8, 9)))
    with pytest.raises(ValueError, match="pixel_size_a"):
        fsc(np.zeros((8, 8)), np.zeros((8, 8)), pixel_size_a=0)


def test_a_filtered_curve_is_never_finer_than_the_filter():
    """Both halves low-passed at the same cut-off correlate beyond it whatever the data:
    the FSC there is no information and the resolution is the cut-off, said to be so."""
    freq = np.arange(6) / (10 * 2.0)  # shells 0 … 5 at 0 … 0.25 /Å (Nyquist 4 Å)
    high = FscCurve(np.arange(6), freq, np.full(6, 0.93), np.ones(6, dtype=int))
    assert high.resolution_a(0.143) == pytest.approx(4.0)  # the bare curve: Nyquist
    assert high.limited_by(0.143) == "nyquist"
    limited = high.limited_to(10.0)  # cut-off at 0.1 /Å = shell 2
    np.testing.assert_allclose(limited.values, [0.93, 0.93, 0.93, 0, 0, 0])
    for method in ("interpolated", "first_below"):
        for threshold in (0.143, 0.5):
            assert limited.resolution_a(threshold, method=method) == pytest.approx(10.0)
            assert limited.limited_by(threshold, method=method) == "filter"
    # a crossing before the cut-off is a measurement and stays as it is
    falling = FscCurve(np.arange(6), freq, np.array([1.0, 0.3, 0.1, 0.9, 0.9, 0.9]),
                       np.ones(6, dtype=int)).limited_to(5.0)
    assert falling.resolution_a(0.5, method="first_below") == pytest.approx(20.0)
    assert falling.limited_by(0.5) is None
    assert high.limited_to(None) is high
    with pytest.raises(ValueError, match="cutoff_a"):
        high.limited_to(0.0)
