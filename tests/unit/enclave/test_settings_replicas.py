"""The replicas' settings: the replay store URL (no credentials in it, never echoed), the CDH
origin (loopback IP literal only), the KBS resource path, the replica id."""

from __future__ import annotations

import pytest

from enclave.settings import SettingsError, load_settings


def test_defaults_are_one_replica() -> None:
    settings = load_settings({})
    assert settings.service.replay_store == "memory"
    assert settings.service.ohttp_key_source == "local"
    assert settings.model_manager.replica_id is None


@pytest.mark.parametrize(
    "url", ["redis://redis.internal:6379/0", "rediss://10.0.0.5:6380", "unix:///run/redis.sock"]
)
def test_redis_urls(url: str) -> None:
    assert load_settings({"replay_store": url}).service.replay_store == url


@pytest.mark.parametrize(
    "url",
    [
        "redis://:s3cret-pw@redis.internal:6379",
        "redis://admin:s3cret-pw@redis.internal",
        "http://redis.internal",
        "redis://",
        "unix://",
    ],
)
def test_bad_replay_stores_are_refused_without_echo(url: str) -> None:
    with pytest.raises(SettingsError, match="replay_store") as caught:
        load_settings({"replay_store": url})
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ohttp_key_cdh_url", "http://kbs.example:8006"),
        ("ohttp_key_cdh_url", "http://localhost:8006"),
        ("ohttp_key_cdh_url", "http://127.0.0.1:8006/cdh"),
        ("ohttp_key_resource", "default/enclave-ohttp"),
        ("ohttp_key_resource", "default/../keys"),
        ("ohttp_key_source", "vault"),
        ("replica_id", "two words"),
    ],
)
def test_other_replica_settings_are_checked(field: str, value: str) -> None:
    with pytest.raises(SettingsError, match=field):
        load_settings({field: value})


def test_the_password_is_a_secret() -> None:
    settings = load_settings({"replay_store_password": "p" * 8 + "w0rd"})
    password = settings.service.replay_store_password
    assert password is not None
    assert "w0rd" not in repr(settings.service)
    assert password.get_secret_value().endswith("w0rd")
