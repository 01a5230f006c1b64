"""Entra ID token rotation under live connections, without Azure.

A credential hands out a new token every ``ROTATE_SECONDS``, each valid ``LIFETIME_SECONDS``; a
Redis ACL user's passwords follow it, and a watcher closes every connection whose last ``AUTH``
(seen through ``MONITOR``) is older than a token's lifetime, as Azure closes connections whose
token expired. Readers stream through the app's stream hub across several rotations: none is cut,
nothing is lost, and the credential is never called on the event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from agentstream.config import Settings
from agentstream.events import MESSAGE_DELTA, RUN_COMPLETED, RUN_STARTED
from agentstream.redis_clients import _Clients, client_kwargs, entra_provider
from agentstream.streamlog.cursor import Cursor
from agentstream.streamlog.hub import StreamHub
from agentstream.streamlog.keys import stream_key
from agentstream.streamlog.reader import open_stream
from agentstream.streamlog.runlog import RunLog

from .redis_server import running_redis_server
from .streamlog_helpers import new_conversation_id

ROTATE_SECONDS = 2.0
LIFETIME_SECONDS = 4.0
STREAM_SECONDS = 30.0  # 15 rotations
READERS = 100
STREAMS = 4
USER = "agentstream-app"


@dataclass
class _AccessToken:
    token: str
    expires_on: int


class RotatingCredential:
    """Token ``k`` is issued at ``start + k * ROTATE_SECONDS``; the server learns it then."""

    def __init__(self, admin: redis.Redis) -> None:
        self.admin = admin
        self.start = time.time()
        self.called_on: set[int] = set()  # thread ids the credential was called on
        self.issued: dict[int, float] = {}  # live token number -> expiry (epoch seconds)
        self.tokens = 0

    def get_token(self, *scopes: str) -> _AccessToken:
        self.called_on.add(threading.get_ident())
        k = int((time.time() - self.start) // ROTATE_SECONDS)
        expires = self.start + k * ROTATE_SECONDS + LIFETIME_SECONDS
        if k not in self.issued:
            self.admin.execute_command("ACL", "SETUSER", USER, f">token-{k}")
            self.issued[k] = expires
            self.tokens += 1
        return _AccessToken(f"token-{k}", int(expires))


class ExpiredTokenCloser(threading.Thread):
    """Closes connections whose last AUTH is older than a token's lifetime; drops the passwords
    of expired tokens."""

    def __init__(self, port: int, credential: RotatingCredential) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.credential = credential
        self.last_auth: dict[str, float] = {}
        self.closed = 0
        self.stopping = threading.Event()
        self.auths = 0

    def run(self) -> None:
        watcher = threading.Thread(target=self._watch_auth, daemon=True)
        watcher.start()
        admin = redis.Redis(port=self.port, decode_responses=True)
        while not self.stopping.wait(0.25):  # the closer's own pace, like Azure's sweeps
            now = time.time()
            for address, at in list(self.last_auth.items()):
                if now - at > LIFETIME_SECONDS:
                    self.closed += admin.client_kill_filter(addr=address)
                    del self.last_auth[address]
            for k, expires in list(self.credential.issued.items()):
                if expires < now:
                    admin.execute_command("ACL", "SETUSER", USER, f"<token-{k}")
                    del self.credential.issued[k]
        admin.close()

    def _watch_auth(self) -> None:
        admin = redis.Redis(port=self.port, decode_responses=True)
        with admin.monitor() as monitor:
            for command in monitor.listen():
                if self.stopping.is_set():
                    return
                if "AUTH" in command["command"].split()[:3]:
                    address = f"{command['client_address']}:{command['client_port']}"
                    self.last_auth[address] = command["time"]
                    self.auths += 1


@pytest.fixture
def redis_with_acl() -> Iterator[tuple[int, RotatingCredential]]:
    with running_redis_server() as port:
        admin = redis.Redis(port=port, decode_responses=True)
        admin.execute_command("ACL", "SETUSER", USER, "on", "~*", "&*", "+@all")
        yield port, RotatingCredential(admin)
        admin.close()


def write_runs(client: redis.Redis, runs: list[tuple[str, str]], stop_at: float) -> None:
    logs = [RunLog(client, cid, run, ttl_seconds=600, maxlen=100_000) for cid, run in runs]
    for log in logs:
        log.append(RUN_STARTED, {"attempt": 1})
    i = 0
    while time.monotonic() < stop_at:
        for log in logs:
            log.append(MESSAGE_DELTA, {"text": f"tok{i} "})
        i += 1
        time.sleep(0.05)  # the writer's pace: a token every 50 ms per stream
    for log in logs:
        log.append(RUN_COMPLETED, {"finish_reason": "stop", "usage": None})


@pytest.mark.slow
async def test_readers_are_not_cut_when_the_token_rotates(
    redis_with_acl: tuple[int, RotatingCredential],
) -> None:
    port, credential = redis_with_acl
    settings = Settings.from_env(
        {
            "REDIS_CONNECTION_STRING": f"127.0.0.1:{port}",
            "REDIS_USE_ENTRA_ID": "true",
            "REDIS_ENTRA_USERNAME": USER,
            "REDIS_CLUSTER": "false",
            "STREAM_KEEPALIVE_SECONDS": "1",
        }
    )
    entra_provider(USER, credential)
    loop_thread = threading.get_ident()
    closer = ExpiredTokenCloser(port, credential)
    closer.start()
    clients = _Clients(settings)
    hub = StreamHub(clients.hub, clients.hub_shards, queue_limit=10_000)
    writer_client = redis.Redis(**client_kwargs(settings.redis, socket_timeout=5.0))
    runs = [(new_conversation_id(), uuid.uuid4().hex) for _ in range(STREAMS)]
    starts = {}
    for cid, run in runs:
        starts[cid] = (
            RunLog(writer_client, cid, run, ttl_seconds=600, maxlen=100_000)
            .append("run.queued", {"message": "go"})
            .id
        )

    async def read(cid: str) -> list[Any]:
        opened = await open_stream(
            clients.readers,
            cid,
            Cursor(starts[cid]),
            keepalive_seconds=1,
            max_seconds=120,
            hub=hub,
            fallback=clients.blocking,
        )
        return [event async for event in opened.items() if event is not None]

    readers = [asyncio.create_task(read(runs[i % STREAMS][0])) for i in range(READERS)]
    writer = threading.Thread(
        target=write_runs, args=(writer_client, runs, time.monotonic() + STREAM_SECONDS)
    )
    writer.start()
    results = await asyncio.gather(*readers)
    await asyncio.to_thread(writer.join)
    closer.stopping.set()
    await hub.aclose()

    expected = {cid: [i for i, _ in writer_client.xrange(stream_key(cid))] for cid, _ in runs}
    print(f"tokens {credential.tokens}, AUTHs {closer.auths}, connections closed {closer.closed}")
    assert credential.tokens >= STREAM_SECONDS // ROTATE_SECONDS
    # Every connection sent AUTH with a fresh token before its old one expired.
    assert closer.closed == 0
    for i, events in enumerate(results):
        cid = runs[i % STREAMS][0]
        assert events[-1].type == RUN_COMPLETED, "a reader was cut"
        assert [e.id for e in events] == expected[cid][1:]
    assert loop_thread not in credential.called_on, "the credential was called on the loop"
    writer_client.close()
