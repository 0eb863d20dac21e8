"""Compute commands keep freed memory for reuse (`cryoweave.cli._memory`)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
from cryoweave.cli._memory import retain_freed_memory
print(retain_freed_memory())
import numpy as np
block = np.ones(64 << 17)  # 64 MiB: mmap'ed by glibc's default rules
address = block.ctypes.data
with open("/proc/self/maps") as maps:
    for line in maps:
        low, high = (int(x, 16) for x in line.split()[0].split("-"))
        if low <= address < high:
            print("heap" if line.rstrip().endswith("[heap]") else "mapping")
"""


def _probe(env_value: str) -> list[str]:
    from tests.conftest import subprocess_env

    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                            env=subprocess_env(CRYOWEAVE_RETAIN_MEMORY=env_value), check=True)
    return result.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_large_blocks_come_from_the_reusable_heap_when_retained():
    """Retained: a 64 MiB array lies in the heap, where freed blocks are reused; with
    CRYOWEAVE_RETAIN_MEMORY=0 (glibc's defaults) it is a mapping of its own, returned to the
    kernel when freed."""
    assert _probe("1") == ["True", "heap"]
    assert _probe("0") == ["False", "mapping"]


def test_exit_hook_is_registered_once(monkeypatch):
    import atexit

    from cryoweave.cli import _main

    registered = []
    monkeypatch.setattr(_main, "_EXIT_HOOKED", False)
    monkeypatch.setattr(atexit, "register", registered.append)
    for _ in range(2):
        _main.main(["--version"])
    assert registered == [_main._skip_exit_collection]
