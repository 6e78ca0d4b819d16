from __future__ import annotations

from pathlib import Path

import pytest

from streamrec.infra.errors import StackError
from streamrec.infra.kafka import BrokerConfig, find_java, new_cluster_id, parse_java_version, server_properties


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "25" 2025-09-16', 25),
        ('java version "1.8.0_392"', 8),
        ("no version here", None),
    ],
)
def test_parse_java_version(output: str, major: int | None) -> None:
    assert parse_java_version(output) == major


def test_missing_java_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(StackError, match="Java 17 or newer.*apt-get install openjdk-17-jre-headless"):
        find_java()


def test_server_properties_are_loopback_single_node_and_lean(tmp_path: Path) -> None:
    text = server_properties(BrokerConfig(host="127.0.0.1", port=1234, controller_port=1235, log_dir=tmp_path))
    props = dict(line.split("=", 1) for line in text.splitlines())
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:1234,CONTROLLER://127.0.0.1:1235"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:1235"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["offsets.topic.replication.factor"] == props["transaction.state.log.replication.factor"] == "1"
    assert int(props["log.cleaner.dedupe.buffer.size"]) <= 16 * 1024 * 1024
    assert props["log.dirs"] == str(tmp_path)


def test_cluster_ids_never_start_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    draws = iter([b"\xfb" + bytes(15), bytes(16)])  # the first encodes to "-wAA...": an option to StorageTool
    monkeypatch.setattr("streamrec.infra.kafka.os.urandom", lambda n: next(draws))
    cluster_id = new_cluster_id()
    assert not cluster_id.startswith("-") and len(cluster_id) == 22
