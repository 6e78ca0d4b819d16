from __future__ import annotations

import pytest

from streamrec.infra.settings import SettingsError

from streamrec.stream.settings import load_settings


def test_defaults_suit_a_kafka_broker() -> None:
    broker = load_settings().broker
    assert broker.heartbeat_interval_s * 3 <= broker.session_timeout_s
    assert broker.session_timeout_s <= broker.rebalance_timeout_s


def test_explicit_value_beats_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_BROKER__FETCH_MAX_WAIT_MS", "25")
    assert load_settings().broker.fetch_max_wait_ms == 25


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STREAMREC_BROKER__FETCH_MAX_WAIT_MS", "-3"),
        ("STREAMREC_BROKER__PARTITIONS", "zero"),
        ("STREAMREC_REDIS__URL", "http://localhost"),
        ("STREAMREC_FEATURES__HALF_LIFE_S", "0"),
    ],
)
def test_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load_settings()


def test_stack_ports_must_differ() -> None:
    with pytest.raises(SettingsError, match="STREAMREC_STACK"):
        load_settings(stack={"broker_port": 20000, "controller_port": 20000})
