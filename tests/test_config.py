from __future__ import annotations

import pytest

from agentstream.config import ConfigError, RedisSettings, Settings, parse_redis_connection_string


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("localhost:6379", RedisSettings("localhost", 6379)),
        ("cache.internal", RedisSettings("cache.internal", 6379)),
        ("redis://localhost:6380/2", RedisSettings("localhost", 6380, db=2)),
        (
            "redis://user:p%40ss@host:7000",
            RedisSettings("host", 7000, username="user", password="p@ss"),
        ),
        (
            "rediss://:secret@host.redis.azure.net:10000",
            RedisSettings("host.redis.azure.net", 10000, password="secret", ssl=True),
        ),
        (
            "myapp.redis.cache.windows.net:6380,password=abc=,ssl=True,abortConnect=False",
            RedisSettings("myapp.redis.cache.windows.net", 6380, password="abc=", ssl=True),
        ),
        ("host:6379,ssl=false,defaultDatabase=3", RedisSettings("host", 6379, db=3)),
    ],
)
def test_every_connection_string_form_parses(value: str, expected: RedisSettings) -> None:
    assert parse_redis_connection_string(value) == expected


def test_azure_form_keeps_password_with_equals_signs() -> None:
    parsed = parse_redis_connection_string("h:6380,password=a=b==,ssl=True")
    assert parsed.connection_kwargs() == {
        "host": "h",
        "port": 6380,
        "db": 0,
        "password": "a=b==",
        "ssl": True,
    }


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"REDIS_CONNECTION_STRING": "host:notaport"}, "REDIS_CONNECTION_STRING port"),
        ({"REDIS_CONNECTION_STRING": "http://host"}, "REDIS_CONNECTION_STRING"),
        ({"REDIS_STREAM_TTL_MINUTES": "ten"}, "REDIS_STREAM_TTL_MINUTES"),
        ({"REDIS_STREAM_TTL_MINUTES": "0"}, "REDIS_STREAM_TTL_MINUTES"),
        ({"RUN_RECORD_TTL_DAYS": "0"}, "RUN_RECORD_TTL_DAYS"),
        ({"STREAM_KEEPALIVE_SECONDS": "-1"}, "STREAM_KEEPALIVE_SECONDS"),
        ({"AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com"}, "AZURE_OPENAI_DEPLOYMENT"),
        ({"AZURE_OPENAI_DEPLOYMENT": "gpt"}, "AZURE_OPENAI_ENDPOINT"),
        ({"OPENAI_BASE_URL": "http://localhost:1/v1"}, "OPENAI_MODEL"),
        ({"HTTP_AUTH_LEVEL": "public"}, "HTTP_AUTH_LEVEL"),
        ({"REDIS_USE_ENTRA_ID": "true"}, "REDIS_ENTRA_USERNAME"),
        ({"REDIS_USE_ENTRA_ID": "maybe"}, "REDIS_USE_ENTRA_ID"),
    ],
)
def test_bad_settings_name_the_setting(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        Settings.from_env(env)


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.redis == RedisSettings("localhost", 6379)
    assert settings.stream_ttl_seconds == 600
    assert settings.keepalive_seconds == 15
    assert settings.max_stream_seconds == 200
    assert settings.model is None
    assert settings.http_auth_level == "FUNCTION"


def test_model_settings_choose_the_provider() -> None:
    azure_key = Settings.from_env(
        {
            "AZURE_OPENAI_ENDPOINT": "https://r.openai.azure.com",
            "AZURE_OPENAI_DEPLOYMENT": "d",
            "AZURE_OPENAI_KEY": "k",
        }
    ).model
    assert azure_key is not None and azure_key.provider == "azure" and not azure_key.uses_entra_id
    azure_entra = Settings.from_env(
        {"AZURE_OPENAI_ENDPOINT": "https://r.openai.azure.com", "AZURE_OPENAI_DEPLOYMENT": "d"}
    ).model
    assert azure_entra is not None and azure_entra.uses_entra_id
    compatible = Settings.from_env(
        {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_MODEL": "m"}
    ).model
    assert compatible is not None and compatible.provider == "openai" and compatible.model == "m"


def test_describe_shows_no_secrets() -> None:
    settings = Settings.from_env(
        {
            "REDIS_CONNECTION_STRING": "h:6380,password=redis-secret,ssl=True",
            "AZURE_OPENAI_ENDPOINT": "https://r.openai.azure.com",
            "AZURE_OPENAI_DEPLOYMENT": "d",
            "AZURE_OPENAI_KEY": "model-secret",
        }
    )
    text = repr(settings.describe()) + repr(settings)
    assert "redis-secret" not in text and "model-secret" not in text
    assert settings.describe()["redis"]["auth"] == "password"


@pytest.mark.parametrize(
    "name",
    ["REDIS_STREAM_TTL_MINUTES", "RUN_LEASE_SECONDS", "HTTP_AUTH_LEVEL", "OPENAI_BASE_URL"],
)
def test_errors_name_the_setting_and_never_repeat_its_value(name: str) -> None:
    # A secret pasted into the wrong setting must not end up in a log line.
    secret = "sk-live-0123456789abcdef"
    env = {name: secret, "OPENAI_MODEL": "m"}
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env)
    assert name in str(raised.value) and secret not in str(raised.value)


def test_lifecycle_settings() -> None:
    settings = Settings.from_env(
        {
            "CONVERSATION_TTL_DAYS": "2",
            "RUN_RECORD_TTL_DAYS": "3",
            "RUN_LEASE_SECONDS": "12.5",
            "RUN_START_DEADLINE_SECONDS": "60",
            "REDIS_RETRY_SECONDS": "5",
            "HISTORY_MAX_MESSAGES": "40",
        }
    )
    assert settings.conversation_ttl_seconds == 2 * 86_400
    assert settings.run_record_ttl_seconds == 3 * 86_400
    assert settings.run_lease_seconds == 12.5 and settings.run_start_deadline_seconds == 60
    assert settings.redis_retry_seconds == 5 and settings.history_max_messages == 40
