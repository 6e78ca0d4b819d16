"""The worker's garbage-collector settings (stream/runtime.py ``tune_gc``)."""

from __future__ import annotations

import gc

import pytest


@pytest.fixture
def restore_gc():  # type: ignore[no-untyped-def]
    threshold = gc.get_threshold()
    yield
    gc.set_threshold(*threshold)
    gc.unfreeze()


def test_full_collections_wait_for_the_configured_number_of_middle_ones(restore_gc) -> None:  # type: ignore[no-untyped-def]
    from streamrec.stream.runtime import tune_gc

    young, middle, _ = gc.get_threshold()
    tune_gc(freeze=False, full_threshold=100)
    assert gc.get_threshold() == (young, middle, 100)  # the younger generations keep Python's thresholds
    assert gc.get_freeze_count() == 0


def test_freezing_takes_the_start_up_heap_out_of_the_collectors_scans(restore_gc) -> None:  # type: ignore[no-untyped-def]
    from streamrec.stream.runtime import tune_gc

    alive = [[i] for i in range(1000)]  # tracked containers, alive at "start-up"
    tune_gc(freeze=True, full_threshold=10)
    assert gc.get_freeze_count() >= len(alive)
    assert not any(obj is alive for obj in gc.get_objects(2))  # frozen: no generation holds it
    assert gc.get_threshold()[2] == 10


def test_a_threshold_below_one_is_refused_with_the_settings_name() -> None:
    from pydantic import ValidationError

    from streamrec.stream.settings import WorkerSettings

    with pytest.raises(ValidationError, match="gc_full_threshold"):
        WorkerSettings(gc_full_threshold=0)
    assert WorkerSettings().gc_full_threshold == 100
