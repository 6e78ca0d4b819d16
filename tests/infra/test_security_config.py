"""What the security options write and accept, without starting anything
(tests/stream/test_security.py runs them on a real stack)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
from pydantic import SecretStr

from streamrec.features.repo import redis_connection_string
from streamrec.infra.errors import StackError
from streamrec.infra.kafka import BrokerConfig, BrokerSecurity, scram_argument, server_properties
from streamrec.infra.services import RedisAuth, _redis_config
from streamrec.infra.settings import SettingsError
from streamrec.infra.tls import TlsFiles
from streamrec.stream.settings import RedisSettings, load_settings


def _props(security: BrokerSecurity, tmp_path: Path) -> dict[str, str]:
    text = server_properties(BrokerConfig(host="127.0.0.1", port=1234, controller_port=1235, log_dir=tmp_path, security=security))
    return dict(line.split("=", 1) for line in text.splitlines())


def test_sasl_over_tls_puts_the_client_listener_behind_scram_and_the_stacks_keystore(tmp_path: Path) -> None:
    tls = TlsFiles(tmp_path / "tls", "ks-pass")
    props = _props(BrokerSecurity((("alice", "pw"),), tls), tmp_path)
    assert props["listeners"] == "SASL_SSL://127.0.0.1:1234,CONTROLLER://127.0.0.1:1235"
    assert props["listener.security.protocol.map"] == "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert 'username="alice" password="pw"' in props["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"]
    assert props["ssl.keystore.location"] == str(tls.keystore) and props["ssl.truststore.location"] == str(tls.ca)


def test_the_default_broker_stays_plaintext_without_security_properties(tmp_path: Path) -> None:
    props = _props(BrokerSecurity(), tmp_path)
    assert props["listeners"].startswith("PLAINTEXT://")
    assert not [key for key in props if key.startswith(("sasl.", "ssl.", "listener.name."))]


def test_security_never_shows_its_passwords_in_a_repr(tmp_path: Path) -> None:
    shown = repr(BrokerSecurity((("alice", "pw-123"),), TlsFiles(tmp_path, "ks-456"))) + repr(RedisAuth("rd-789", "app"))
    assert "pw-123" not in shown and "ks-456" not in shown and "rd-789" not in shown


@pytest.mark.parametrize("password", ['has"quote', "back\\slash", "line\nbreak", ""])
def test_a_scram_password_storage_tool_cannot_quote_is_refused(password: str) -> None:
    with pytest.raises(StackError, match="SCRAM password"):
        scram_argument("alice", password)


def test_redis_keeps_only_a_hash_of_the_password_and_turns_the_default_user_off(tmp_path: Path) -> None:
    text = _redis_config("127.0.0.1", 6000, tmp_path, RedisAuth("s3cret", "app"), TlsFiles(tmp_path, ""))
    assert "s3cret" not in text
    assert "user default off" in text and "user app on resetpass #" in text
    assert "port 0" in text and "tls-port 6000" in text


def test_the_effective_redis_url_carries_the_login_and_the_ca_to_feast(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    redis = RedisSettings(url="rediss://127.0.0.1:6380/2", username="app", password=SecretStr("p@ss"), ssl_cafile=ca)
    assert redis.effective_url == f"rediss://app:p%40ss@127.0.0.1:6380/2?ssl_ca_certs={quote(str(ca.resolve()), safe='')}"
    assert redis_connection_string(redis.effective_url).split(",") == [
        "127.0.0.1:6380", "db=2", "username=app", "password=p@ss", "ssl=true", f"ssl_ca_certs={ca.resolve()}"]


@pytest.mark.parametrize(
    ("overrides", "setting"),
    [
        ({"broker": {"security_protocol": "SASL_SSL"}}, "STREAMREC_BROKER__SASL_USERNAME"),
        ({"stack": {"sasl": True}}, "STREAMREC_BROKER__SASL_PASSWORD"),
        ({"stack": {"redis_auth": True}}, "STREAMREC_REDIS__PASSWORD"),
    ],
)
def test_security_without_its_credentials_stops_at_start_naming_them(overrides: dict[str, object], setting: str) -> None:
    with pytest.raises(SettingsError, match=setting):
        load_settings(**overrides)
