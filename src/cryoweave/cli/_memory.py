"""Keep freed memory in the process during compute commands (glibc only).

NumPy and SciPy allocate each large temporary (an FFT output, a batch of samples) afresh.
glibc's malloc serves blocks above 32 MiB with mmap and gives them back with munmap when they
are freed, and the kernel has to zero every page again when the next block is touched: on the
2-core benchmark VM, 1.3–1.4 s per GiB once the memory has gone back to the host, 0.05 s when
it is reused (`benchmarks/process_costs.py` measures both). A reconstruction frees and
re-allocates several GiB of such temporaries, so the compute commands (run-protocol, workflow
run, downsample, simulate, demo) ask malloc to keep freed blocks for reuse instead: no mmap
for large blocks, no trimming of the heap, one arena for all threads (a thread's arena would
mmap the large blocks anyway). The process's memory then stays at its peak until it exits;
these commands exit when their work is done. ``CRYOWEAVE_RETAIN_MEMORY=0`` turns this off.
"""

from __future__ import annotations

import ctypes
import os
import sys

ENV_VAR = "CRYOWEAVE_RETAIN_MEMORY"
# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_TRIM_THRESHOLD = 2**31 - 1  # free bytes at the heap's top before a trim: the largest allowed


def retain_freed_memory() -> bool:
    """Ask glibc's malloc to reuse freed memory instead of returning it to the kernel.

    Returns whether the settings took effect (False off Linux, with another C library, or
    when ``CRYOWEAVE_RETAIN_MEMORY=0``). Call it before the process starts worker threads.
    """
    if os.environ.get(ENV_VAR, "").strip() == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        # glibc's soname on every Linux platform (ctypes.util.find_library would run ldconfig
        # in a subprocess: ~10 ms of every command's start-up with its import)
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: musl has no such symbol
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD), (_M_ARENA_MAX, 1))
    return all(mallopt(option, value) == 1 for option, value in settings)
