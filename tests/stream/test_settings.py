from __future__ import annotations

import pytest

from stream.settings import SettingsError, load_settings


def test_defaults_fill_from_broker_flavor() -> None:
    tansu = load_settings()
    kafka = load_settings(broker={"flavor": "kafka"})
    assert tansu.broker.fetch_max_wait_ms is not None and tansu.broker.fetch_max_wait_ms < 100
    assert kafka.broker.fetch_max_wait_ms == 500
    assert tansu.broker.session_timeout_s < kafka.broker.session_timeout_s  # type: ignore[operator]


def test_explicit_value_beats_flavor_default(monkeypatch: pytest.MonkeyPatch) -> None:
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


def test_exactly_once_on_tansu_is_refused_with_the_reason() -> None:
    with pytest.raises(SettingsError, match="STREAMREC_BROKER.*transactions"):
        load_settings(broker={"processing_guarantee": "exactly_once"})
