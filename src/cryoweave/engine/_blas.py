"""The BLAS library's threads stay within the engine's thread budget.

NumPy's OpenBLAS has a thread per core, and it splits any product larger than about 2.6e5
multiply-adds across them. After such a product its threads spin for about 0.1 s, waiting for
the next one. The runtime gives each step its share of the cores (`thread_budget`: two halves
of ReconstructFourier side by side on two cores get one thread each). Each half's CTF product,
(500, 5) @ (5, 8320), was then split over both cores, and the spinning threads took CPU from the
other half: 6 % of the CPU samples of a reconstruction (perf, 10,000 × 128²).

`blas_threads_at_most(n)` limits every loaded BLAS library (through threadpoolctl) to the
smallest budget in force in the process, and restores the libraries' own thread counts when the
last budget ends. The limit is process-wide, since BLAS libraries count their threads per
process. Budgets larger than a library's count leave it alone.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

_LOCK = threading.Lock()
_ACTIVE: list[int] = []  # the budgets in force, any thread
_ORIGINAL: dict[str, int] = {}  # library path -> its thread count before the first budget


@contextlib.contextmanager
def blas_threads_at_most(threads: int) -> Iterator[None]:
    """Within the block, BLAS calls (from any thread) use at most ``threads`` threads."""
    if threads < 1:
        raise ValueError(f"threads={threads} must be at least 1")
    with _LOCK:
        _ACTIVE.append(threads)
        try:
            _apply()
        except BaseException:
            _ACTIVE.remove(threads)
            raise
    try:
        yield
    finally:
        with _LOCK:
            _ACTIVE.remove(threads)
            _apply()


def _apply() -> None:
    """Set each BLAS library to its count for the budgets in force (caller holds _LOCK).
    Libraries are looked up each time (0.3 ms), so one loaded since the last call (SciPy's own
    OpenBLAS comes with scipy.linalg) is limited as well."""
    from threadpoolctl import ThreadpoolController

    libraries = ThreadpoolController().select(user_api="blas").lib_controllers
    for library in libraries:
        original = _ORIGINAL.setdefault(library.filepath, library.num_threads)
        wanted = min(original, *_ACTIVE) if _ACTIVE else original
        if library.num_threads != wanted:
            _set_threads(library, wanted)
    if not _ACTIVE:  # counts set between budgets (by the user) are the next originals
        _ORIGINAL.clear()


def _set_threads(library: Any, threads: int) -> None:
    """threadpoolctl (≥ 3.6) lets only one thread, the first to set it, change OpenBLAS's
    process-wide count, and ignores the others silently. The budgets of steps in several threads
    are all coordinated here, under _LOCK, so this thread takes control for the call and
    leaves it free for the next."""
    release = getattr(type(library), "clear_controlling_thread", None)
    if release is not None:
        release(force=True)
    try:
        library.set_num_threads(threads)
    finally:
        if release is not None:
            release(force=True)
