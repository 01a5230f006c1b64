"""Microsoft Entra ID tokens as Redis passwords, rotated under live connections.

Azure Managed Redis closes a connection whose token expired, so a token fetched when the
connection opened is not enough: a long-lived connection (a stream hub subscriber, a pooled request
connection) must send ``AUTH`` again with a fresh token before the old one runs out.

:class:`EntraTokenProvider` is a redis-py ``StreamingCredentialProvider``: redis-py subscribes every
pool (and every cluster node) to it and re-authenticates the pool's idle connections when a new
token arrives, and each connection in use as soon as it is released. The tokens come from a
background thread that asks the credential ahead of expiry (at ``REFRESH_AT`` of each token's
lifetime), so a blocking credential (``DefaultAzureCredential`` asks the managed identity endpoint
over HTTP) is never called on an event loop: a connection opening there takes the cached token.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from redis.auth.token import SimpleToken
from redis.credentials import StreamingCredentialProvider

from .backoff import REDIS_WRITE

logger = logging.getLogger(__name__)

REDIS_SCOPE = "https://redis.azure.com/.default"
# A new token is fetched when this share of the current one's lifetime has passed.
REFRESH_AT = 0.7


class EntraTokenProvider(StreamingCredentialProvider):
    """``(username, token)`` for Redis ``AUTH``, refreshed ahead of expiry in the background.

    ``credential`` is any azure-identity style credential (``get_token(scope)`` returning a token
    with ``token`` and ``expires_on`` in epoch seconds); ``DefaultAzureCredential`` by default.
    """

    def __init__(self, username: str, credential: Any | None = None) -> None:
        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        self._username = username
        self._credential = credential
        self._lock = threading.Lock()
        self._fetched = threading.Condition(self._lock)
        self._token: SimpleToken | None = None
        self._listeners: list[Callable[[SimpleToken], None]] = []
        self._thread: threading.Thread | None = None

    # -- what redis-py asks -------------------------------------------------------------------

    def get_credentials(self) -> tuple[str, str]:
        """The current token; waits for the first one (never on an event loop, see below)."""
        self._start()
        with self._fetched:
            while self._token is None:
                self._fetched.wait()
            return self._username, self._token.get_value()

    async def get_credentials_async(self) -> tuple[str, str]:
        token = self._token
        if token is not None:
            return self._username, token.get_value()
        # Only the very first connection of the process waits, and in a thread.
        return await asyncio.to_thread(self.get_credentials)

    def on_next(self, callback: Callable[[Any], Any]) -> None:
        """Called (by redis-py) with each pool's re-authentication; an async one runs on the
        event loop it was registered from."""
        listener = callback
        if asyncio.iscoroutinefunction(callback):
            listener = _on_loop(callback, asyncio.get_running_loop())
        with self._lock:
            self._listeners.append(listener)

    def on_error(self, callback: Callable[[Exception], Any]) -> None:
        """Errors are logged and retried here; a pool has nothing to do about them."""

    def is_streaming(self) -> bool:
        return True

    # -- the refresher ------------------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._refresh_forever, name="redis-entra-token", daemon=True
                )
                self._thread.start()

    def _refresh_forever(self) -> None:
        failures = 0
        while True:
            try:
                token = self._fetch()
            except Exception as exc:  # noqa: BLE001 - a failed fetch is retried, never fatal
                failures += 1
                logger.warning("fetching a Redis token failed: %s", type(exc).__name__)
                time.sleep(REDIS_WRITE.delay(failures))
                continue
            failures = 0
            with self._fetched:
                renewal = self._token is not None
                self._token = token
                self._fetched.notify_all()
                listeners = list(self._listeners)
            if renewal:
                for listener in listeners:
                    _call_safely(listener, token)
            lifetime = (token.get_expires_at_ms() - token.get_received_at_ms()) / 1000
            time.sleep(max(0.05, lifetime * REFRESH_AT))

    def _fetch(self) -> SimpleToken:
        access = self._credential.get_token(REDIS_SCOPE)
        now_ms = time.time() * 1000
        return SimpleToken(access.token, access.expires_on * 1000, now_ms, {"oid": self._username})


def _on_loop(
    callback: Callable[[Any], Coroutine[Any, Any, None]], loop: asyncio.AbstractEventLoop
) -> Callable[[SimpleToken], None]:
    """A refresher-thread listener that runs ``callback`` on ``loop`` (if it still runs)."""

    def listener(token: SimpleToken) -> None:
        if loop.is_closed():
            return
        future = asyncio.run_coroutine_threadsafe(callback(token), loop)
        future.add_done_callback(_log_failure)

    return listener


def _log_failure(future: Any) -> None:
    error = None if future.cancelled() else future.exception()
    if error is not None:
        # Connections that could not re-authenticate now do so when next released.
        logger.warning("re-authenticating Redis connections failed: %s", type(error).__name__)


def _call_safely(listener: Callable[[SimpleToken], None], token: SimpleToken) -> None:
    try:
        listener(token)
    except Exception as exc:  # noqa: BLE001 - one pool's failure must not stop the others
        logger.warning("re-authenticating Redis connections failed: %s", type(exc).__name__)
