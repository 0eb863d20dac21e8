"""Overlap reading, computing and writing: three stages joined by bounded queues.

The reader and writer run in their own threads (file I/O and NumPy/SciPy release the GIL), so
disk time hides behind compute time and at most ``depth`` batches per queue are in memory.
An error in any stage stops the others and is raised in the caller.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")
U = TypeVar("U")
_DONE = object()


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue, stop: threading.Event) -> Any:
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            if stop.is_set():
                return _DONE


def run_pipeline(jobs: Iterable[T], read: Callable[[T], U], compute: Callable[[T, U], Any],
                 write: Callable[[T, Any], None], *, depth: int = 2) -> None:
    """For each job: ``write(job, compute(job, read(job)))``, the three stages overlapped.

    ``compute`` runs in the calling thread (it may use many cores itself); jobs are written in
    the order given.
    """
    stop = threading.Event()
    read_q: queue.Queue = queue.Queue(maxsize=depth)
    write_q: queue.Queue = queue.Queue(maxsize=depth)
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for job in jobs:
                if stop.is_set() or not _put(read_q, (job, read(job)), stop):
                    return
        except BaseException as exc:
            errors.append(exc)
            stop.set()
        else:
            _put(read_q, _DONE, stop)

    def writer() -> None:
        try:
            while (item := _get(write_q, stop)) is not _DONE:
                write(*item)
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=reader, name="pipeline-read", daemon=True),
               threading.Thread(target=writer, name="pipeline-write", daemon=True)]
    for thread in threads:
        thread.start()
    try:
        while (item := _get(read_q, stop)) is not _DONE:
            job, data = item
            if not _put(write_q, (job, compute(job, data)), stop):
                break
        _put(write_q, _DONE, stop)
    except BaseException as exc:
        errors.append(exc)
        stop.set()
    finally:
        if not stop.is_set():
            threads[1].join()  # let the writer drain the queue before stopping everything
        stop.set()
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
