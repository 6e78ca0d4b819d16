from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamrec.tools.reliability import RecordError, load_records, markdown, render, summarise, write_record


def test_records_from_several_writers_add_up(tmp_path: Path) -> None:
    write_record({"name": "sigkill", "kind": "fault", "guarantee": "at_least_once", "faults_injected": 1,
                  "events_sent": 20_000, "events_doubled": 4, "doubled_bound": 4, "recovery_s": {"restart": 12.5},
                  "verified": True}, tmp_path)
    write_record({"name": "fuzz", "kind": "fuzz", "payloads_tried": 10_200}, tmp_path)
    summary = render(tmp_path, tmp_path / "out" / "r.json", tmp_path / "out" / "r.md")
    assert summary["ok"] and summary["records"] == 2
    assert summary["totals"]["payloads_tried"] == 10_200 and summary["totals"]["events_sent"] == 20_000
    assert json.loads((tmp_path / "out" / "r.json").read_text())["totals"]["faults_injected"] == 1
    assert "| sigkill | fault | at_least_once |" in (tmp_path / "out" / "r.md").read_text()


def test_a_later_run_of_a_scenario_replaces_its_record(tmp_path: Path) -> None:
    write_record({"name": "redis", "kind": "fault", "events_lost": 3}, tmp_path)
    write_record({"name": "redis", "kind": "fault", "events_lost": 0}, tmp_path)
    assert [r["events_lost"] for r in load_records(tmp_path)] == [0]


@pytest.mark.parametrize(("record", "problem"), [
    ({"name": "a", "kind": "fault", "events_lost": 1}, "1 events lost"),
    ({"name": "a", "kind": "fault", "guarantee": "exactly_once", "events_doubled": 1, "doubled_bound": 5},
     "1 events doubled (bound 0)"),
    ({"name": "a", "kind": "fault", "guarantee": "at_least_once", "events_doubled": 6, "doubled_bound": 5},
     "6 events doubled (bound 5)"),
    ({"name": "a", "kind": "fault", "verified": False}, "exactness check failed"),
])
def test_a_violation_fails_the_report_and_is_named(record: dict[str, object], problem: str) -> None:
    summary = summarise([record])
    assert not summary["ok"] and summary["runs"][0]["violations"] == [problem]
    assert problem in markdown(summary)


@pytest.mark.parametrize(("record", "field"), [
    ({"kind": "fault"}, "'name'"),
    ({"name": "../x", "kind": "fault"}, "'name'"),
    ({"name": "a", "kind": "fault", "events_lost": -1}, "'events_lost'"),
    ({"name": "a", "kind": "fault", "payloads_tried": 1.5}, "'payloads_tried'"),
    ({"name": "a", "kind": "fault", "guarantee": "maybe"}, "'guarantee'"),
    ({"name": "a", "kind": "fault", "recovery_s": {"x": "slow"}}, "'recovery_s'"),
])
def test_a_malformed_record_is_refused_naming_the_field(tmp_path: Path, record: dict[str, object], field: str) -> None:
    with pytest.raises(RecordError, match=field):
        write_record(record, tmp_path)
    assert not list(tmp_path.glob("*.json"))


def test_a_broken_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(RecordError, match="bad.json"):
        load_records(tmp_path)
    with pytest.raises(RecordError, match="no such directory"):
        load_records(tmp_path / "missing")


def test_no_records_is_not_a_passing_report() -> None:
    assert not summarise([])["ok"]
