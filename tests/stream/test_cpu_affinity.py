"""The worker's cores (``STREAMREC_WORKER__CPU_AFFINITY``, stream/runtime.py ``pin_to_cores``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from streamrec.infra.settings import SettingsError
from streamrec.stream.runtime import parse_cpu_list, pin_to_cores


def test_a_core_list_is_read_as_taskset_writes_it() -> None:
    assert parse_cpu_list("1") == {1}
    assert parse_cpu_list("0,2-4,7") == {0, 2, 3, 4, 7}
    assert parse_cpu_list("") == set()


def test_a_range_that_runs_backwards_is_refused() -> None:
    with pytest.raises(ValueError, match="3-1 runs backwards"):
        parse_cpu_list("3-1")


def test_text_that_is_not_a_core_list_is_refused_at_load_with_the_settings_name() -> None:
    from pydantic import ValidationError

    from streamrec.stream.settings import WorkerSettings

    with pytest.raises(ValidationError, match="cpu_affinity"):
        WorkerSettings(cpu_affinity="first")


def test_a_core_the_machine_lacks_is_named_with_the_setting() -> None:
    absent = os.cpu_count() or 1
    with pytest.raises(SettingsError, match=f"STREAMREC_WORKER__CPU_AFFINITY: this machine has no core {absent}"):
        pin_to_cores(f"0,{absent}")


def test_no_cores_set_leaves_the_process_where_it_was() -> None:
    before = os.sched_getaffinity(0)
    assert pin_to_cores("") is None
    assert os.sched_getaffinity(0) == before


def test_a_pinned_process_and_the_threads_it_starts_run_on_those_cores_only() -> None:
    # in a child process: the test run's own affinity stays as it was
    code = (
        "import os, threading\n"
        "from streamrec.stream.runtime import pin_to_cores\n"
        "pin_to_cores('0')\n"
        "seen = []\n"
        "t = threading.Thread(target=lambda: seen.append(os.sched_getaffinity(0)))\n"
        "t.start(); t.join()\n"
        "print(sorted(os.sched_getaffinity(0)), sorted(seen[0]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split("\n")[0] == "[0] [0]"
