"""Settings from the environment, validated once.

Every error names the setting it is about, so a misconfigured deployment says what to fix.
Secrets are kept out of ``repr`` and out of :meth:`Settings.describe` (used by the health check).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


class ConfigError(ValueError):
    """A setting is missing or has a value the app cannot use."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class RedisSettings:
    """Connection arguments for redis-py, parsed from ``REDIS_CONNECTION_STRING``."""

    host: str = "localhost"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl: bool = False
    use_entra_id: bool = False

    def connection_kwargs(self) -> dict[str, Any]:
        """Keyword arguments shared by the sync and async redis-py clients."""
        kwargs: dict[str, Any] = {"host": self.host, "port": self.port, "db": self.db}
        if self.username:
            kwargs["username"] = self.username
        if self.password:
            kwargs["password"] = self.password
        if self.ssl:
            kwargs["ssl"] = True
        return kwargs


@dataclass(frozen=True)
class ModelSettings:
    """Which chat-completions endpoint the agent talks to."""

    provider: str  # "azure" or "openai"
    model: str  # deployment name for Azure, model name otherwise
    endpoint: str | None = None  # Azure OpenAI resource endpoint
    api_version: str | None = None
    base_url: str | None = None  # OpenAI-compatible server
    api_key: str | None = field(default=None, repr=False)
    timeout_seconds: float = 60.0
    max_retries: int = 2

    @property
    def uses_entra_id(self) -> bool:
        return self.provider == "azure" and not self.api_key


@dataclass(frozen=True)
class ToolSettings:
    geocoding_url: str = "https://geocoding-api.open-meteo.com/v1/search"
    forecast_url: str = "https://api.open-meteo.com/v1/forecast"
    ticketmaster_url: str = "https://app.ticketmaster.com/discovery/v2/events.json"
    ticketmaster_api_key: str | None = field(default=None, repr=False)
    timeout_seconds: float = 10.0
    result_max_chars: int = 4000


@dataclass(frozen=True)
class PoolSettings:
    """How many Redis connections a worker process opens, and how many streams it serves.

    Request commands (POST, status, cancel, health), stream catch-up reads and the stream hub's
    reads use separate pools (the hub's subscriber connections are its own), so readers can never
    starve the other routes.
    """

    request_connections: int = 16  # REDIS_MAX_CONNECTIONS
    wait_seconds: float = 2.0  # REDIS_POOL_TIMEOUT_SECONDS: then 503 at_capacity
    hub: bool = True  # STREAM_HUB
    # STREAM_HUB_CONNECTIONS: the hub's connections per Redis node (shard): one subscriber for
    # the append notices plus the rest for reads
    hub_connections: int = 4
    catch_up_connections: int = 2  # STREAM_CATCH_UP_CONNECTIONS: opening checks, catch-up reads
    max_readers: int = 2000  # STREAM_MAX_READERS: concurrent stream responses per process
    reader_queue_events: int = 500  # STREAM_READER_QUEUE: a reader this far behind is cut loose


@dataclass(frozen=True)
class Settings:
    redis: RedisSettings
    model: ModelSettings | None
    tools: ToolSettings
    stream_ttl_seconds: int = 600
    stream_maxlen: int = 10_000
    delta_flush_chars: int = 64
    delta_flush_ms: int = 23
    keepalive_seconds: float = 15.0
    max_stream_seconds: float = 200.0
    sse_retry_ms: int = 3000
    max_message_chars: int = 16_000
    max_tool_rounds: int = 5
    http_auth_level: str = "FUNCTION"
    # Run lifecycle: every run ends, every conversation outlives its stream.
    conversation_ttl_seconds: int = 30 * 86_400
    run_record_ttl_seconds: int = 30 * 86_400
    run_lease_seconds: float = 30.0
    run_start_deadline_seconds: float = 300.0
    redis_retry_seconds: float = 20.0
    history_max_messages: int = 100
    pools: PoolSettings = field(default_factory=PoolSettings)
    topology: TopologySettings = field(default_factory=lambda: TopologySettings())
    auth: AuthSettings = field(default_factory=lambda: AuthSettings())
    caller_limits: CallerLimitSettings = field(default_factory=lambda: CallerLimitSettings())

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        reader = _Reader(env)
        redis = parse_redis_connection_string(
            reader.text("REDIS_CONNECTION_STRING", "localhost:6379")
        )
        if reader.flag("REDIS_USE_ENTRA_ID", False):
            if redis.password:
                raise ConfigError(
                    "REDIS_USE_ENTRA_ID is set but REDIS_CONNECTION_STRING has a password; "
                    "use one or the other"
                )
            username = reader.text("REDIS_ENTRA_USERNAME", "")
            if not username:
                raise ConfigError(
                    "REDIS_ENTRA_USERNAME is required with REDIS_USE_ENTRA_ID "
                    "(the object id of the managed identity or principal)"
                )
            redis = RedisSettings(
                host=redis.host,
                port=redis.port,
                db=redis.db,
                username=username,
                ssl=redis.ssl,
                use_entra_id=True,
            )
        auth_level = reader.text("HTTP_AUTH_LEVEL", "FUNCTION").upper()
        if auth_level not in {"ANONYMOUS", "FUNCTION", "ADMIN"}:
            raise ConfigError("HTTP_AUTH_LEVEL must be ANONYMOUS, FUNCTION or ADMIN")
        return cls(
            redis=redis,
            model=_model_settings(reader),
            tools=ToolSettings(
                geocoding_url=reader.url("OPEN_METEO_GEOCODING_URL", ToolSettings.geocoding_url),
                forecast_url=reader.url("OPEN_METEO_FORECAST_URL", ToolSettings.forecast_url),
                ticketmaster_url=reader.url("TICKETMASTER_URL", ToolSettings.ticketmaster_url),
                ticketmaster_api_key=reader.text("TICKETMASTER_API_KEY", "") or None,
                timeout_seconds=reader.number("TOOL_TIMEOUT_SECONDS", 10.0),
                result_max_chars=reader.integer("TOOL_RESULT_MAX_CHARS", 4000),
            ),
            stream_ttl_seconds=60 * reader.integer("REDIS_STREAM_TTL_MINUTES", 10),
            stream_maxlen=reader.integer("REDIS_STREAM_MAXLEN", 10_000),
            delta_flush_chars=reader.integer("DELTA_FLUSH_CHARS", 64),
            delta_flush_ms=reader.integer("DELTA_FLUSH_MS", 23, minimum=0),
            keepalive_seconds=reader.number("STREAM_KEEPALIVE_SECONDS", 15.0),
            max_stream_seconds=reader.number("STREAM_MAX_SECONDS", 200.0),
            sse_retry_ms=reader.integer("SSE_RETRY_MS", 3000),
            max_message_chars=reader.integer("MAX_MESSAGE_CHARS", 16_000),
            max_tool_rounds=reader.integer("MAX_TOOL_ROUNDS", 5),
            http_auth_level=auth_level,
            conversation_ttl_seconds=86_400 * reader.integer("CONVERSATION_TTL_DAYS", 30),
            run_record_ttl_seconds=86_400 * reader.integer("RUN_RECORD_TTL_DAYS", 30),
            run_lease_seconds=reader.number("RUN_LEASE_SECONDS", 30.0),
            run_start_deadline_seconds=reader.number("RUN_START_DEADLINE_SECONDS", 300.0),
            redis_retry_seconds=reader.number("REDIS_RETRY_SECONDS", 20.0),
            history_max_messages=reader.integer("HISTORY_MAX_MESSAGES", 100, minimum=2),
            pools=_pool_settings(reader),
            topology=_topology_settings(reader),
            auth=_auth_settings(reader),
            caller_limits=_caller_limit_settings(reader),
        )

    def describe(self) -> dict[str, Any]:
        """A summary safe to show to anyone: no secrets, no credentials."""
        model: dict[str, Any] = {"configured": self.model is not None}
        if self.model is not None:
            model.update(
                provider=self.model.provider,
                model=self.model.model,
                auth="entra-id" if self.model.uses_entra_id else "key",
            )
        return {
            "redis": {
                "host": self.redis.host,
                "port": self.redis.port,
                "ssl": self.redis.ssl,
                "auth": "entra-id"
                if self.redis.use_entra_id
                else ("password" if self.redis.password else "none"),
            },
            "model": model,
            "events_tool": self.tools.ticketmaster_api_key is not None,
            "stream_ttl_seconds": self.stream_ttl_seconds,
            "max_stream_seconds": self.max_stream_seconds,
            "conversation_ttl_seconds": self.conversation_ttl_seconds,
            "run_lease_seconds": self.run_lease_seconds,
            "auth_mode": self.auth.mode,
        }


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings.from_env()


def parse_redis_connection_string(value: str) -> RedisSettings:
    """Parse every form of ``REDIS_CONNECTION_STRING`` the design accepts.

    - ``host:port`` (or just ``host``)
    - ``redis://[user:password@]host[:port][/db]`` and ``rediss://`` (TLS)
    - the Azure portal's StackExchange.Redis form:
      ``host:port,password=...,ssl=True,abortConnect=False``
    """
    value = value.strip()
    if not value:
        raise ConfigError("REDIS_CONNECTION_STRING is empty")
    if "://" in value:
        return _parse_redis_url(value)
    head, *options = [part.strip() for part in value.split(",")]
    host, port = _split_host_port(head)
    kwargs: dict[str, Any] = {}
    for option in options:
        if not option:
            continue
        name, sep, raw = option.partition("=")
        if not sep:
            raise ConfigError("REDIS_CONNECTION_STRING has an option without '='")
        name = name.strip().lower()
        raw = raw.strip()
        if name == "password":
            kwargs["password"] = raw or None
        elif name == "user":
            kwargs["username"] = raw or None
        elif name == "ssl":
            kwargs["ssl"] = _parse_bool("REDIS_CONNECTION_STRING ssl", raw)
        elif name == "defaultdatabase":
            kwargs["db"] = _parse_int("REDIS_CONNECTION_STRING defaultDatabase", raw)
        # Other StackExchange.Redis options (abortConnect, connectTimeout, ...) have no
        # redis-py counterpart that matters here; they are accepted and ignored.
    return RedisSettings(host=host, port=port, **kwargs)


def _parse_redis_url(value: str) -> RedisSettings:
    parts = urlsplit(value)
    if parts.scheme not in {"redis", "rediss"}:
        raise ConfigError("REDIS_CONNECTION_STRING scheme must be redis:// or rediss://")
    if not parts.hostname:
        raise ConfigError("REDIS_CONNECTION_STRING has no host")
    try:
        port = parts.port or 6379
    except ValueError as exc:
        raise ConfigError("REDIS_CONNECTION_STRING has an invalid port") from exc
    db = 0
    path = parts.path.strip("/")
    if path:
        db = _parse_int("REDIS_CONNECTION_STRING database", path)
    query = parse_qs(parts.query)
    ssl = parts.scheme == "rediss"
    if "ssl" in query:
        ssl = _parse_bool("REDIS_CONNECTION_STRING ssl", query["ssl"][0])
    return RedisSettings(
        host=parts.hostname,
        port=port,
        db=db,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        ssl=ssl,
    )


def _split_host_port(head: str) -> tuple[str, int]:
    host, sep, port = head.rpartition(":")
    if not sep:
        host, port = head, "6379"
    if not host:
        raise ConfigError("REDIS_CONNECTION_STRING has no host")
    return host, _parse_int("REDIS_CONNECTION_STRING port", port)


def _parse_int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number") from None


def _parse_bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false")


class _Reader:
    """Typed access to environment settings with errors that name the setting."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def text(self, name: str, default: str) -> str:
        return self._env.get(name, default).strip()

    def flag(self, name: str, default: bool) -> bool:
        raw = self._env.get(name)
        return default if raw is None else _parse_bool(name, raw)

    def integer(self, name: str, default: int, minimum: int = 1) -> int:
        raw = self._env.get(name, "").strip()
        if not raw:
            return default
        value = _parse_int(name, raw)
        if value < minimum:
            raise ConfigError(f"{name} must be at least {minimum}")
        return value

    def number(self, name: str, default: float) -> float:
        raw = self._env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number") from None
        if value <= 0:
            raise ConfigError(f"{name} must be greater than 0")
        return value

    def url(self, name: str, default: str) -> str:
        value = self.text(name, default) or default
        if urlsplit(value).scheme not in {"http", "https"}:
            raise ConfigError(f"{name} must be an http(s) URL")
        return value


def _pool_settings(reader: _Reader) -> PoolSettings:
    return PoolSettings(
        request_connections=reader.integer("REDIS_MAX_CONNECTIONS", 16),
        wait_seconds=reader.number("REDIS_POOL_TIMEOUT_SECONDS", 2.0),
        hub=reader.flag("STREAM_HUB", True),
        hub_connections=reader.integer("STREAM_HUB_CONNECTIONS", 4, minimum=2),
        catch_up_connections=reader.integer("STREAM_CATCH_UP_CONNECTIONS", 2),
        max_readers=reader.integer("STREAM_MAX_READERS", 2000),
        reader_queue_events=reader.integer("STREAM_READER_QUEUE", 500),
    )


def _azure_openai_key(reader: _Reader) -> str | None:
    """``AZURE_OPENAI_API_KEY``, the name the openai SDK reads; else ``AZURE_OPENAI_KEY``."""
    return reader.text("AZURE_OPENAI_API_KEY", "") or reader.text("AZURE_OPENAI_KEY", "") or None


def _model_settings(reader: _Reader) -> ModelSettings | None:
    timeout = reader.number("MODEL_TIMEOUT_SECONDS", 60.0)
    retries = reader.integer("MODEL_MAX_RETRIES", 2, minimum=0)
    endpoint = reader.text("AZURE_OPENAI_ENDPOINT", "")
    if endpoint:
        if urlsplit(endpoint).scheme not in {"http", "https"}:
            raise ConfigError("AZURE_OPENAI_ENDPOINT must be an http(s) URL")
        deployment = reader.text("AZURE_OPENAI_DEPLOYMENT", "")
        if not deployment:
            raise ConfigError("AZURE_OPENAI_DEPLOYMENT is required with AZURE_OPENAI_ENDPOINT")
        if reader.text("OPENAI_BASE_URL", ""):
            raise ConfigError(
                "AZURE_OPENAI_ENDPOINT and OPENAI_BASE_URL are both set; "
                "configure Azure OpenAI or an OpenAI-compatible server, not both"
            )
        return ModelSettings(
            provider="azure",
            model=deployment,
            endpoint=endpoint,
            api_version=reader.text("AZURE_OPENAI_API_VERSION", "")
            or reader.text("OPENAI_API_VERSION", "2024-10-21"),
            api_key=_azure_openai_key(reader),
            timeout_seconds=timeout,
            max_retries=retries,
        )
    if reader.text("AZURE_OPENAI_DEPLOYMENT", "") or _azure_openai_key(reader):
        raise ConfigError(
            "AZURE_OPENAI_ENDPOINT is required when AZURE_OPENAI_DEPLOYMENT or "
            "AZURE_OPENAI_API_KEY is set"
        )
    base_url = reader.text("OPENAI_BASE_URL", "")
    api_key = reader.text("OPENAI_API_KEY", "")
    if not base_url and not api_key:
        return None
    if base_url and urlsplit(base_url).scheme not in {"http", "https"}:
        raise ConfigError("OPENAI_BASE_URL must be an http(s) URL")
    model = reader.text("OPENAI_MODEL", "")
    if not model:
        raise ConfigError("OPENAI_MODEL is required with OPENAI_BASE_URL or OPENAI_API_KEY")
    return ModelSettings(
        provider="openai",
        model=model,
        base_url=base_url or None,
        # A local OpenAI-compatible server usually ignores the key, but the client wants one.
        api_key=api_key or "unused",
        timeout_seconds=timeout,
        max_retries=retries,
    )


@dataclass(frozen=True)
class AuthSettings:
    """Who may call the API and how the caller is known (``AUTH_MODE``).

    ``key``: the function key only, no caller identity. ``entra``: a Microsoft Entra ID bearer
    token on every conversation route. ``easyauth``: App Service Authentication's principal header.
    """

    mode: str = "key"
    audiences: tuple[str, ...] = ()
    issuer: str = ""
    jwks_url: str = ""
    leeway_seconds: float = 60.0


ENTRA_AUTHORITY = "https://login.microsoftonline.com"


def _auth_settings(reader: _Reader) -> AuthSettings:
    mode = reader.text("AUTH_MODE", "key").lower() or "key"
    if mode not in {"key", "entra", "easyauth"}:
        raise ConfigError("AUTH_MODE must be key, entra or easyauth")
    if mode == "easyauth" and not reader.flag("WEBSITE_AUTH_ENABLED", False):
        raise ConfigError(
            "AUTH_MODE=easyauth needs App Service Authentication turned on for the app "
            "(the platform then sets WEBSITE_AUTH_ENABLED=True)"
        )
    if mode != "entra":
        return AuthSettings(mode=mode)
    tenant = reader.text("AUTH_ENTRA_TENANT_ID", "")
    issuer = reader.text("AUTH_ENTRA_ISSUER", "")
    jwks_url = reader.text("AUTH_ENTRA_JWKS_URL", "")
    if not tenant and not (issuer and jwks_url):
        raise ConfigError(
            "AUTH_ENTRA_TENANT_ID is required with AUTH_MODE=entra "
            "(or both AUTH_ENTRA_ISSUER and AUTH_ENTRA_JWKS_URL)"
        )
    audiences = tuple(a.strip() for a in reader.text("AUTH_ENTRA_AUDIENCE", "").split(","))
    audiences = tuple(a for a in audiences if a)
    if not audiences:
        raise ConfigError(
            "AUTH_ENTRA_AUDIENCE is required with AUTH_MODE=entra (the API's application ID URI "
            "or client id; several separated by commas)"
        )
    jwks_url = jwks_url or f"{ENTRA_AUTHORITY}/{tenant}/discovery/v2.0/keys"
    if urlsplit(jwks_url).scheme not in {"http", "https"}:
        raise ConfigError("AUTH_ENTRA_JWKS_URL must be an http(s) URL")
    return AuthSettings(
        mode=mode,
        audiences=audiences,
        issuer=issuer or f"{ENTRA_AUTHORITY}/{tenant}/v2.0",
        jwks_url=jwks_url,
        leeway_seconds=reader.number("AUTH_LEEWAY_SECONDS", 60.0),
    )


@dataclass(frozen=True)
class CallerLimitSettings:
    """Per-caller limits held in Redis across every worker; 0 turns a limit off."""

    active_runs: int = 0  # LIMIT_ACTIVE_RUNS
    runs_per_minute: int = 0  # LIMIT_RUNS_PER_MINUTE
    open_streams: int = 0  # LIMIT_OPEN_STREAMS

    @property
    def any(self) -> bool:
        return bool(self.active_runs or self.runs_per_minute or self.open_streams)


def _caller_limit_settings(reader: _Reader) -> CallerLimitSettings:
    return CallerLimitSettings(
        active_runs=reader.integer("LIMIT_ACTIVE_RUNS", 0, minimum=0),
        runs_per_minute=reader.integer("LIMIT_RUNS_PER_MINUTE", 0, minimum=0),
        open_streams=reader.integer("LIMIT_OPEN_STREAMS", 0, minimum=0),
    )


# Redis topology: clustering and replication (docs/architecture.md, "Redis topologies").


@dataclass(frozen=True)
class TopologySettings:
    """How the app meets a clustered or replicated Redis."""

    cluster: str = "auto"  # REDIS_CLUSTER: auto (ask the server) | true | false
    # REDIS_MIN_REPLICAS: replicas a write must reach before it counts as written (the writer
    # keeps it until then); None = 1 when the server reports replicas, else 0.
    min_replicas: int | None = None
    # REDIS_REPLICA_WAIT_MS: how long a WAIT waits for them (a write is kept, not lost, when
    # none confirms in time; only while no replica answers does each write take this long).
    replica_wait_ms: int = 200


def _topology_settings(reader: _Reader) -> TopologySettings:
    cluster = reader.text("REDIS_CLUSTER", "auto").lower()
    if cluster in _TRUE:
        cluster = "true"
    elif cluster in _FALSE - {""}:
        cluster = "false"
    elif cluster in {"", "auto"}:
        cluster = "auto"
    else:
        raise ConfigError("REDIS_CLUSTER must be auto, true or false")
    replicas = reader.text("REDIS_MIN_REPLICAS", "")
    return TopologySettings(
        cluster=cluster,
        min_replicas=None if replicas == "" else reader.integer("REDIS_MIN_REPLICAS", 0, minimum=0),
        replica_wait_ms=reader.integer("REDIS_REPLICA_WAIT_MS", 200),
    )
