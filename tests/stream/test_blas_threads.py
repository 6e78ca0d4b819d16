"""The worker's BLAS thread limit (threadpoolctl), read back from the loaded libraries."""

from __future__ import annotations

from threadpoolctl import threadpool_info, threadpool_limits

from streamrec.stream.runtime import limit_blas_threads
from streamrec.stream.settings import load_settings


def _blas_threads() -> set[int]:
    return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}


def test_the_limit_is_in_effect_for_numpys_blas_and_can_be_undone() -> None:
    with threadpool_limits(limits=2, user_api="blas"):  # what BLAS starts with on a 2-core machine
        limiter = limit_blas_threads(1)
        assert limiter is not None
        assert _blas_threads() == {1}
        limiter.restore_original_limits()
        assert _blas_threads() == {2}


def test_zero_leaves_blas_alone() -> None:
    with threadpool_limits(limits=2, user_api="blas"):
        assert limit_blas_threads(0) is None
        assert _blas_threads() == {2}


def test_the_worker_runs_one_blas_thread_by_default() -> None:
    assert load_settings().worker.blas_threads == 1
