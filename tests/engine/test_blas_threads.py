"""BLAS threads stay within the engine's thread budget (`thread_budget`, `_blas`)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from cryoweave.engine import thread_budget
from cryoweave.engine._blas import blas_threads_at_most


def _blas_threads() -> set[int]:
    return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}


@pytest.fixture
def blas_count():
    """NumPy's BLAS with at least 2 threads (its own count where it has more), the count it
    had back afterwards."""
    counts = _blas_threads()
    assert counts, "NumPy's BLAS library is not visible to threadpoolctl"
    n = max(2, *counts)
    with threadpool_limits(limits=n, user_api="blas"):
        assert _blas_threads() == {n}
        yield n
    assert _blas_threads() == counts


def _product_is_right() -> bool:
    a = np.arange(600.0).reshape(20, 30)
    product = a @ np.ones((30, 400))  # large enough for OpenBLAS to split it when it may
    return np.array_equal(product, np.repeat(a.sum(axis=1)[:, None], 400, axis=1))


def test_a_budget_limits_blas_and_gives_the_count_back(blas_count):
    with thread_budget(1):
        assert _blas_threads() == {1}
        assert _product_is_right()
    assert _blas_threads() == {blas_count}
    assert _product_is_right()


def test_the_smallest_budget_in_force_wins_and_larger_ones_change_nothing(blas_count):
    n = blas_count
    with thread_budget(n + 4):
        assert _blas_threads() == {n}  # never more than the library's own count
        with thread_budget(1):
            assert _blas_threads() == {1}
            with thread_budget(2):
                assert _blas_threads() == {1}
            assert _blas_threads() == {1}
        assert _blas_threads() == {n}
    assert _blas_threads() == {n}


def test_budgets_of_steps_in_other_threads_hold_until_the_last_ends(blas_count):
    """Two steps side by side in worker threads (as the runtime runs them): the smaller
    budget holds while both run, the other step's once the first has ended, none after."""
    n = blas_count
    both_in = threading.Barrier(2)
    second_looked, first_out = threading.Event(), threading.Event()
    seen: dict[str, set[int]] = {}
    failures: list[BaseException] = []

    def first_step() -> None:
        try:
            with thread_budget(1):
                both_in.wait(timeout=10)
                seen["first"] = _blas_threads()
                assert second_looked.wait(timeout=10)  # leave only once both have looked
        except BaseException as exc:  # reported by the test thread
            failures.append(exc)

    def second_step() -> None:
        try:
            with thread_budget(n):
                both_in.wait(timeout=10)
                seen["second"] = _blas_threads()
                second_looked.set()
                assert first_out.wait(timeout=10)
                seen["second alone"] = _blas_threads()
        except BaseException as exc:
            failures.append(exc)

    first, second = threading.Thread(target=first_step), threading.Thread(target=second_step)
    first.start()
    second.start()
    first.join(timeout=20)
    first_out.set()
    second.join(timeout=20)
    assert not failures, failures
    assert seen == {"first": {1}, "second": {1}, "second alone": {n}}
    assert _blas_threads() == {n}


def test_a_failing_step_gives_the_count_back(blas_count):
    with pytest.raises(RuntimeError, match="step failed"), thread_budget(1):
        raise RuntimeError("step failed")
    assert _blas_threads() == {blas_count}


def test_a_count_set_between_budgets_is_the_next_one_restored(blas_count):
    with threadpool_limits(limits=blas_count + 1, user_api="blas"):
        with thread_budget(1):
            assert _blas_threads() == {1}
        assert _blas_threads() == {blas_count + 1}
    assert _blas_threads() == {blas_count}


def test_bad_budgets_are_refused_before_anything_changes(blas_count):
    with pytest.raises(ValueError, match="at least 1"), blas_threads_at_most(0):
        pass
    with pytest.raises(ValueError, match="at least 1"), thread_budget(0):
        pass
    assert _blas_threads() == {blas_count}


def test_a_failure_to_set_the_count_leaves_no_budget_behind(blas_count, monkeypatch):
    from cryoweave.engine import _blas

    def broken(library, threads):
        raise OSError("no such symbol")

    monkeypatch.setattr(_blas, "_set_threads", broken)
    with pytest.raises(OSError, match="no such symbol"), thread_budget(1):
        pass
    monkeypatch.undo()
    assert _blas._ACTIVE == [] and _blas_threads() == {blas_count}
    with thread_budget(1):
        assert _blas_threads() == {1}
