"""Every FFT-based kernel on random white noise, float32, odd and even boxes (issue 12 §1).

Smooth test images hide faults at Nyquist (the CuPy `fourier_crop` fault was invisible on them);
white noise has full power there. Each body compares the kernel on float32 input of the backend
under test (`xp`: NumPy here, CuPy too where a GPU is usable) with a float64 reference computed
with NumPy: an independent formula where one is short (shifts, FSC), else the same kernel in
float64 on NumPy. Required agreement: ≤ 1e-5 relative (float32 rounding is ~1e-7).
"""

from __future__ import annotations

import numpy as np
import pytest

from cryoweave.engine import (
    Projector,
    ReconstructionAccumulator,
    apply_bfactor,
    backproject,
    euler_to_matrix,
    fourier_downsample,
    fourier_gaussian_filter,
    fsc,
    highpass_filter,
    lowpass_filter,
    lowpass_filter_a,
    project,
    resample_volume,
    shift_images,
    to_host,
)

TOLERANCE = 1e-5
BOXES = [16, 17, 32, 33]


def _noise(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


def _relative(got, want: np.ndarray) -> float:
    return float(np.linalg.norm(to_host(got).astype(np.float64) - want) / np.linalg.norm(want))


def _agree(kernel, inputs: list[np.ndarray], xp) -> None:
    """kernel(*float32 arrays on xp) against kernel(*float64 NumPy arrays)."""
    got = kernel(*(xp.asarray(a.astype(np.float32)) for a in inputs))
    want = kernel(*inputs)
    assert got.dtype == xp.float32
    assert _relative(got, to_host(want)) <= TOLERANCE


# ----------------------------------------------------------------------------------- images


@pytest.mark.parametrize("box", BOXES)
def test_shift_images_matches_the_phase_formula(xp, box):
    images = _noise((5, box, box), box)
    sx, sy = np.linspace(-3.3, 2.7, 5), np.linspace(1.4, -0.6, 5)
    got = shift_images(xp.asarray(images.astype(np.float32)), xp.asarray(sx), xp.asarray(sy))
    ky = np.fft.fftfreq(box) * box  # even box: index N/2 is −N/2 here …
    if box % 2 == 0:
        ky[box // 2] = box // 2  # … and +N/2 in the documented convention
    kx = np.arange(box // 2 + 1)
    phase = np.exp(-2j * np.pi * (kx[None, None, :] * sx[:, None, None]
                                  + ky[None, :, None] * sy[:, None, None]) / box)
    want = np.fft.irfft2(np.fft.rfft2(images) * phase, (box, box))
    assert _relative(got, want) <= TOLERANCE


@pytest.mark.parametrize(("shape", "factor"), [((4, 64, 96), 2.0), ((3, 63, 80), 2.5),
                                               ((2, 101, 77), 3.0), ((5, 48, 48), 1.5)])
def test_fourier_downsample_agrees(xp, shape, factor):
    _agree(lambda x: fourier_downsample(x, factor)[0], [_noise(shape, sum(shape))], xp)


@pytest.mark.parametrize("shape", [(3, 64, 96), (2, 63, 81)])
def test_preprocessing_filters_agree(xp, shape):
    x = _noise(shape, 1)
    _agree(lambda a: lowpass_filter(a, 0.3, 0.05), [x], xp)
    _agree(lambda a: highpass_filter(a, 0.05, 0.02), [x], xp)
    _agree(lambda a: fourier_gaussian_filter(a, 1.7), [x], xp)


# ----------------------------------------------------------------------------------- volumes


@pytest.mark.parametrize("box", BOXES)
def test_volume_filters_agree(xp, box):
    volume = _noise((box, box, box), box)
    _agree(lambda v: lowpass_filter_a(v, 9.0, 2.0), [volume], xp)
    _agree(lambda v: apply_bfactor(v, -50.0, 2.0), [volume], xp)
    _agree(lambda v: apply_bfactor(v[:3], 80.0, 2.0, ndim=2), [volume], xp)


@pytest.mark.parametrize(("box", "target_pixel"), [(32, 3.0), (33, 1.6), (17, 4.0)])
def test_resample_volume_agrees(xp, box, target_pixel):
    _agree(lambda v: resample_volume(v, 2.0, target_pixel, box - 4)[0],
           [_noise((box, box, box), box)], xp)


@pytest.mark.parametrize("box", BOXES)
def test_fsc_of_white_noise_matches_the_shell_formula(xp, box):
    a, b = _noise((box, box, box), 1), _noise((box, box, box), 2)
    b = 0.6 * a + 0.8 * b  # correlated, so the curve is not ~0
    got = fsc(xp.asarray(a.astype(np.float32)), xp.asarray(b.astype(np.float32)))
    fa, fb = np.fft.fftn(a), np.fft.fftn(b)
    k = np.fft.fftfreq(box) * box
    radius = np.rint(np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2
                             + k[None, None, :] ** 2)).astype(int).ravel()
    keep = radius < len(got.values)
    shells = radius[keep]

    def total(values):
        return np.bincount(shells, weights=values.ravel()[keep], minlength=len(got.values))

    want = total((fa * fb.conj()).real) / np.sqrt(total(abs(fa) ** 2) * total(abs(fb) ** 2))
    np.testing.assert_allclose(got.values, want, rtol=0, atol=TOLERANCE)


# ------------------------------------------------------------------- projection and insertion


def _poses(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return euler_to_matrix(rng.uniform(-180, 180, n), np.degrees(np.arccos(rng.uniform(-1, 1, n))),
                           rng.uniform(-180, 180, n))


@pytest.mark.parametrize("box", BOXES)
def test_projection_and_backprojection_agree(xp, box):
    volume, images = _noise((box, box, box), box), _noise((7, box, box), box + 1)
    matrices = _poses(7, box)
    origins = np.random.default_rng(box).uniform(-2, 2, (7, 2))
    for batch_size in (7, 3):  # one batch, and batches that do not divide n

        def forward(v, m=matrices, o=origins, b=batch_size):
            x = array_of(v)
            return project(v, x.asarray(m), origin_xy_px=x.asarray(o), batch_size=b)

        def adjoint(y, m=matrices, o=origins, b=batch_size):
            x = array_of(y)
            return backproject(y, x.asarray(m), origin_xy_px=x.asarray(o), batch_size=b)

        _agree(forward, [volume], xp)
        _agree(adjoint, [images], xp)


def array_of(a):
    from cryoweave.engine import array_namespace

    return array_namespace(a)


@pytest.mark.parametrize("box", [16, 17])
def test_projector_with_ctf_and_reconstruction_agree(xp, box):
    volume, images = _noise((box, box, box), 5), _noise((11, box, box), 6)
    matrices = _poses(11, 7)
    ctf = np.cos(np.random.default_rng(8).uniform(0, 6, (11, box, box // 2 + 1)))

    def projections(v, c):
        x = array_of(v)
        return Projector.from_volume(v).project(x.asarray(matrices), ctf=c, batch_size=4)

    _agree(projections, [volume, ctf], xp)

    def reconstruction(y, c):
        x = array_of(y)
        accumulator = ReconstructionAccumulator.empty(box, xp=x)
        accumulator.insert(y, x.asarray(matrices), ctf=c, batch_size=4)
        return accumulator.reconstruct(gridding_iterations=3).astype(y.dtype)

    _agree(reconstruction, [images, ctf], xp)
