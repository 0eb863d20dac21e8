"""Total-variation denoising of micrographs with Xmipp's model, NumPy or CuPy.

Model (Xmipp `denoiseTVFilter` and helpers `denoiseTVenergy`, `denoiseTVgradient`,
`denoiseTVproj` in xmipp/src/xmipp/libraries/data/filters.cpp), per micrograph:

- rescale to z = 255 · (x − min) / (max − min) and take the generalised Anscombe transform
  A(z) = (2/λ)·sqrt(λz + 3λ²/8 + σ_g² − λg), λ = 1, σ_g = 5.8, g = 0; Y = A(z) / max A(z).
- minimise over X in the box [0, 1] (X is the clean image over 255):
      E(X) = ½ Σ (A(255·X)/max A − Y)² + μ Σ sqrt(Dx X² + Dy X² + β²),
  μ = 0.03, β = 1e-5, Dx / Dy periodic forward differences, starting from X = Y.
- optimiser: spectral projected gradient (SPG): direction d = P[0,1](X − θ∇E) − X, Armijo
  backtracking (γ = 1e-4) with safeguarded quadratic interpolation (σ1 = 0.1, σ2 = 0.9), then
  the Barzilai–Borwein step θ = sᵀs / sᵀy clipped to [1e-3, 1e3] (θ = 1e3 when sᵀy ≤ 0).
  `iterations` steps (Xmipp's maxIter).

Differences from Xmipp, on purpose:
- **Fix** (spec item 6): the result X ∈ [0, 1] is mapped back to the input's intensity range,
  min + X·(max − min) — the inverse of the rescaling above — instead of being left in [0, 1].
  Intensities keep their meaning: the output lies within [min, max] of the input.
- Xmipp stops early when max(X_new − X_old) < 0 (a signed maximum, so a step that lowers every
  pixel ends the run); we stop early only when the step is zero (sᵀs = 0).
- Arithmetic is float32 (float64 input stays float64) with sums per block of rows; Xmipp uses
  double. Backtracking gives up after `_MAX_BACKTRACKS` halvings (no progress possible).

Reading Xmipp's code: the data-term gradient ½a²(1 − target/sqrt(X + c0)) written here is
Xmipp's K3 − (q/s²)·Y/sqrt(λqX/s² + K1/s²); its `K2 = lambda * (q/s*s)` (missing parentheses)
only feeds a positivity guard that always holds (K1 > 0, X ≥ 0), so the results are unaffected.

Implementation: one fused pass per iteration (per trial point): projection, data term, TV term,
gradient and the Barzilai–Borwein dot products, evaluated over blocks of rows that fit in the CPU
cache (one halo row each side for the periodic differences), spread over threads; on CuPy the
whole image is one block.
"""

from __future__ import annotations

import dataclasses
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cryoweave.physical import MAX_DENOISE_ITERATIONS

from ._backend import array_namespace, fft_workers

POISSON_SCALE = 1.0  # λ
GAUSSIAN_STD = 5.8  # σ_g
GAUSSIAN_MEAN = 0.0  # g
INTENSITY_RANGE = 255.0  # q
TV_WEIGHT = 0.03  # μ
TV_SMOOTHING = 1e-5  # β
_THETA_MIN, _THETA_MAX = 1e-3, 1e3
_ARMIJO_GAMMA = 1e-4
_SIGMA1, _SIGMA2 = 0.1, 0.9
_MAX_BACKTRACKS = 40
_BLOCK_ELEMENTS = 1 << 17  # pixels per block of rows (NumPy): temporaries stay in L2/L3


@dataclasses.dataclass
class _Problem:
    """Arrays and constants of one SPG run on a (y, x) image."""

    target: Any  # Y / a = sqrt(z/255 + c0): the data term is ½a² Σ (sqrt(X + c0) − target)²
    x: Any
    grad: Any
    x_trial: Any
    grad_trial: Any
    offset: float  # c0 = (3λ²/8 + σ_g² − λg) / (λq)
    half_a2: float  # a²/2, a = 2·sqrt(q/λ) / max A


@dataclasses.dataclass
class _Sums:
    data: float = 0.0  # Σ (sqrt(X + c0) − target)²
    tv: float = 0.0  # Σ sqrt(|∇X|² + β²)
    delta: float = 0.0  # ⟨∇E(X), d⟩
    s_dot_y: float = 0.0
    s_dot_s: float = 0.0

    def add(self, other: _Sums) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


def _dot(xp: Any, a: Any, b: Any) -> float:
    return float(xp.dot(a.reshape(-1), b.reshape(-1)))


def _halo_rows(a: Any, start: int, stop: int) -> Any:
    """Rows start − 1 … stop (inclusive) of a 2-D array, periodic in y."""
    height = a.shape[0]
    if start >= 1 and stop < height:
        return a[start - 1: stop + 1]
    xp = array_namespace(a)
    return xp.take(a, xp.arange(start - 1, stop + 1) % height, axis=0)


class _Scratch:
    """Work buffers for blocks of up to `rows` rows of width `width`, reused across calls."""

    def __init__(self, xp: Any, rows: int, width: int, dtype: Any) -> None:
        self.point = xp.empty((rows + 2, width), dtype)
        self.diff_x = xp.empty((rows + 1, width), dtype)
        self.diff_y = xp.empty((rows + 1, width), dtype)
        self.norm = xp.empty((rows + 1, width), dtype)
        self.work = xp.empty((rows + 1, width), dtype)
        self.step = xp.empty((rows, width), dtype)


def _evaluate_rows(xp: Any, pb: _Problem, start: int, stop: int, step: tuple[float, float] | None,
                   scratch: _Scratch) -> _Sums:
    """Trial point, energy terms, gradient and BB products for rows [start, stop).

    step None: the trial point is pb.x itself; else (θ, ξ): X + ξ(P[0,1](X − θ∇E) − X).
    Writes pb.x_trial and pb.grad_trial on these rows.
    """
    rows = stop - start
    sums = _Sums()
    x_rows = _halo_rows(pb.x, start, stop)
    point = scratch.point[: rows + 2]
    if step is None:
        point[...] = x_rows
    else:
        theta, xi = step
        xp.multiply(_halo_rows(pb.grad, start, stop), point.dtype.type(-theta), out=point)
        point += x_rows
        xp.clip(point, 0, 1, out=point)
        if xi != 1.0:
            point -= x_rows
            point *= point.dtype.type(xi)
            point += x_rows
    centre = point[1:-1]
    pb.x_trial[start:stop] = centre
    grad_out = pb.grad_trial[start:stop]
    work = scratch.work[:rows]
    if step is not None:
        direction = xp.subtract(centre, x_rows[1:-1], out=scratch.step[:rows])
        sums.delta = _dot(xp, pb.grad[start:stop], direction)

    # data term and its gradient ½a²·r/v, v = sqrt(X + c0), r = v − target
    root = xp.add(centre, point.dtype.type(pb.offset), out=scratch.norm[:rows])
    xp.sqrt(root, out=root)
    residual = xp.subtract(root, pb.target[start:stop], out=work)
    sums.data = _dot(xp, residual, residual)
    xp.divide(residual, root, out=grad_out)
    grad_out *= grad_out.dtype.type(pb.half_a2)

    # TV on rows start − 1 … stop − 1 (the first is the halo for the divergence)
    upper = point[:-1]
    diff_x = scratch.diff_x[: rows + 1]
    xp.subtract(upper[:, 1:], upper[:, :-1], out=diff_x[:, :-1])
    xp.subtract(upper[:, 0], upper[:, -1], out=diff_x[:, -1])
    diff_y = xp.subtract(point[1:], upper, out=scratch.diff_y[: rows + 1])
    norm = xp.multiply(diff_x, diff_x, out=scratch.norm[: rows + 1])
    square = xp.multiply(diff_y, diff_y, out=scratch.work[: rows + 1])
    norm += square
    norm += norm.dtype.type(TV_SMOOTHING**2)
    xp.sqrt(norm, out=norm)
    sums.tv = float(norm[1:].sum())
    xp.divide(norm.dtype.type(TV_WEIGHT), norm, out=norm)
    diff_x *= norm  # μ·DxX/|∇X|
    diff_y *= norm
    # μ·∇TV = −div: (p_y above − p_y) + (p_x left − p_x), periodic in x
    xp.subtract(diff_y[:-1], diff_y[1:], out=work)
    work -= diff_x[1:]
    work[:, 1:] += diff_x[1:, :-1]
    work[:, 0] += diff_x[1:, -1]
    grad_out += work

    if step is not None:
        xp.subtract(grad_out, pb.grad[start:stop], out=work)
        sums.s_dot_y = _dot(xp, direction, work)
        sums.s_dot_s = _dot(xp, direction, direction)
    return sums


class _Evaluator:
    """Runs `_evaluate_rows` over the whole image: blocks of rows on threads (NumPy), or one
    block (CuPy)."""

    def __init__(self, xp: Any, shape: tuple[int, int], dtype: Any, workers: int,
                 block_rows: int | None) -> None:
        height, width = shape
        self.xp = xp
        if xp.__name__ != "numpy":
            block_rows, workers = height, 1
        elif block_rows is None:
            block_rows = max(1, _BLOCK_ELEMENTS // width)
        block_rows = min(block_rows, height)
        blocks = [(r, min(r + block_rows, height)) for r in range(0, height, block_rows)]
        workers = max(1, min(workers, len(blocks)))
        per_worker = math.ceil(len(blocks) / workers)
        self.groups = [blocks[i: i + per_worker] for i in range(0, len(blocks), per_worker)]
        self.scratch = [_Scratch(xp, block_rows, width, dtype) for _ in self.groups]
        self.pool = ThreadPoolExecutor(len(self.groups)) if len(self.groups) > 1 else None

    def __call__(self, pb: _Problem, step: tuple[float, float] | None) -> _Sums:
        def run(group_index: int) -> list[_Sums]:
            return [_evaluate_rows(self.xp, pb, start, stop, step, self.scratch[group_index])
                    for start, stop in self.groups[group_index]]

        parts = [run(0)] if self.pool is None else list(self.pool.map(run, range(len(self.groups))))
        # Summed block by block in image order: the result does not depend on the thread count.
        total = _Sums()
        for group in parts:
            for block in group:
                total.add(block)
        return total

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def _energy(pb: _Problem, sums: _Sums) -> float:
    return pb.half_a2 * sums.data + TV_WEIGHT * sums.tv


def _setup(image: Any, low: float, high: float, pb: _Problem | None) -> _Problem:
    """Anscombe-transformed, normalised problem for one (y, x) image with range [low, high]
    (buffers of `pb` reused when the shape matches)."""
    xp = array_namespace(image)
    dtype = image.dtype
    if pb is None or pb.x.shape != image.shape or pb.x.dtype != dtype:
        pb = _Problem(*(xp.empty(image.shape, dtype) for _ in range(5)), offset=0.0, half_a2=0.0)
    k1 = 3.0 / 8.0 * POISSON_SCALE**2 + GAUSSIAN_STD**2 - POISSON_SCALE * GAUSSIAN_MEAN
    root = pb.x  # sqrt(λz + K1), z = 255·(x − min)/(max − min)
    xp.subtract(image, dtype.type(low), out=root)
    root *= dtype.type(POISSON_SCALE * INTENSITY_RANGE / (high - low))
    root += dtype.type(k1)
    xp.maximum(root, 0, out=root)
    xp.sqrt(root, out=root)
    root_max = float(root.max())
    anscombe_max = 2.0 / POISSON_SCALE * root_max
    a = 2.0 * math.sqrt(INTENSITY_RANGE / POISSON_SCALE) / anscombe_max
    xp.multiply(root, dtype.type(1.0 / math.sqrt(POISSON_SCALE * INTENSITY_RANGE)), out=pb.target)
    root *= dtype.type(1.0 / root_max)  # X0 = Y = A(z) / max A
    pb.offset = k1 / (POISSON_SCALE * INTENSITY_RANGE)
    pb.half_a2 = 0.5 * a * a
    return pb


def _swap(pb: _Problem) -> None:
    pb.x, pb.x_trial = pb.x_trial, pb.x
    pb.grad, pb.grad_trial = pb.grad_trial, pb.grad


def _spg(pb: _Problem, iterations: int, evaluate: _Evaluator, history: list[float] | None
         ) -> None:
    """Minimise E from pb.x (in place) with `iterations` SPG steps; energies go to `history`."""
    sums = evaluate(pb, None)
    _swap(pb)
    f_old = _energy(pb, sums)
    if history is not None:
        history.append(f_old)
    theta = 1.0
    for _ in range(iterations):
        sums = evaluate(pb, (theta, 1.0))
        delta, xi, f_new = sums.delta, 1.0, _energy(pb, sums)
        backtracks = 0
        while f_new > f_old + _ARMIJO_GAMMA * xi * delta:
            if backtracks == _MAX_BACKTRACKS:
                return  # no decrease possible at float precision: keep pb.x
            xi_quadratic = -0.5 * xi * xi * delta / (f_new - f_old - xi * delta)
            xi = xi_quadratic if _SIGMA1 <= xi_quadratic <= _SIGMA2 * xi else xi / 2.0
            sums = evaluate(pb, (theta, xi))
            f_new = _energy(pb, sums)
            backtracks += 1
        _swap(pb)
        f_old = f_new
        if history is not None:
            history.append(f_new)
        if sums.s_dot_s == 0.0:
            return
        if sums.s_dot_y <= 0:
            theta = _THETA_MAX
        else:
            theta = min(_THETA_MAX, max(_THETA_MIN, sums.s_dot_s / sums.s_dot_y))


def check_iterations(iterations: int) -> None:
    """Refuse a count of iterations that is not an integer from 1 to MAX_DENOISE_ITERATIONS."""
    if isinstance(iterations, bool) or not isinstance(iterations, int) or \
            not 1 <= iterations <= MAX_DENOISE_ITERATIONS:
        raise ValueError(f"denoise_iterations={iterations!r} must be an integer from 1 to "
                         f"{MAX_DENOISE_ITERATIONS}")


def denoise_tv_inplace(batch: Any, iterations: int, *, workers: int | None = None,
                       history: list[list[float]] | None = None,
                       _block_rows: int | None = None) -> Any:
    """TV-denoise a private C-contiguous (n, y, x) float array in place (see module notes).

    `history`, when given, receives one list of energies per micrograph (initial, then after
    each step). Constant micrographs are left unchanged. Returns `batch`.
    """
    check_iterations(iterations)
    xp = array_namespace(batch)
    threads = fft_workers() if workers is None else workers
    evaluate = _Evaluator(xp, tuple(batch.shape[-2:]), batch.dtype, threads, _block_rows)
    pb = None
    try:
        for image in batch:
            low, high = float(image.min()), float(image.max())
            energies: list[float] | None = [] if history is not None else None
            if high > low:
                pb = _setup(image, low, high, pb)
                _spg(pb, iterations, evaluate, energies)
                # the fix: back to the input's intensity range (inverse of the rescaling)
                xp.multiply(pb.x, image.dtype.type(high - low), out=image)
                image += image.dtype.type(low)
            if history is not None:
                history.append(energies)
    finally:
        evaluate.close()
    return batch


def denoise_tv(images: Any, iterations: int = 50, *, workers: int | None = None) -> Any:
    """Total-variation denoising as Xmipp (Poisson–Gaussian Anscombe data term, μ = 0.03,
    spectral projected gradient, `iterations` steps), mapped back to the input's intensity range.

    images: (n, y, x) or (y, x), float32 (float64 kept); NumPy or CuPy. Returns a new array of the
    same shape and dtype, within [min, max] of each input micrograph. Deterministic.
    workers: CPU threads over blocks of rows (NumPy; default `fft_workers()`); the result does
        not depend on it.
    """
    xp = array_namespace(images)
    if images.ndim not in (2, 3):
        raise ValueError(
            f"denoise_tv expects micrographs (n, y, x) or one (y, x); got shape {images.shape}"
        )
    dtype = images.dtype if images.dtype == xp.float64 else xp.float32
    batch = xp.array(images, dtype=dtype, copy=True, order="C")
    single = batch.ndim == 2
    out = denoise_tv_inplace(batch[None] if single else batch, iterations, workers=workers)
    return out[0] if single else out
