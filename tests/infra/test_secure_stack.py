"""SCRAM users are made when the broker's storage is formatted: a later `stack up` with
another user or password is refused, naming the setting, and leaves nothing running."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from streamrec.infra.errors import StackError
from streamrec.infra.stack import EmbeddedStack, StackConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _brokers_under(directory: Path) -> list[int]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info["cmdline"] or ()
        if "kafka.Kafka" in cmdline and any(str(directory) in part for part in cmdline):
            found.append(proc.info["pid"])
    return found


def test_other_scram_credentials_on_a_formatted_broker_are_refused_and_nothing_is_left_running(tmp_path: Path) -> None:
    config = StackConfig.on_free_ports(tmp_path / "stack", sasl_users=(("alice", "first-password"),))
    stack = EmbeddedStack(config)
    try:
        assert {r.name for r in stack.up()} == {"broker", "redis"}
    finally:
        stack.down()

    renamed = EmbeddedStack(replace(config, sasl_users=(("bob", "first-password"),)))
    try:
        with pytest.raises(StackError, match="formatted with SCRAM users \\['alice'\\]"):
            renamed.up()
    finally:
        renamed.down()

    new_password = EmbeddedStack(replace(config, sasl_users=(("alice", "second-password"),)))
    try:
        with pytest.raises(StackError, match="STREAMREC_BROKER__SASL_PASSWORD.*stack reset"):
            new_password.up()
        assert _brokers_under(config.data_dir.resolve()) == []  # the refused broker was stopped, not left behind
    finally:
        new_password.down()
