"""``REDIS_CLUSTER=auto`` asks the server once; a Redis that does not answer is not asked again
for a few seconds, so requests fail fast instead of each blocking the event loop on the probe."""

from __future__ import annotations

import asyncio
import socket

import pytest
import redis

from agentstream import redis_topology
from agentstream.config import TopologySettings
from tests.tcp_server import serving_tcp


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_silent_redis_is_probed_once_per_failure_window() -> None:
    """A server that accepts and never answers: one connection per window, not one per call."""
    connections: list[int] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        await reader.read()  # answers nothing until the client goes away
        writer.close()

    port = _free_port()
    clock = _Clock()
    probe = {"host": "127.0.0.1", "port": port}
    auto = TopologySettings(cluster="auto")
    with serving_tcp(silent, port):
        with pytest.raises(redis.TimeoutError):
            redis_topology.uses_cluster(auto, probe, clock=clock)
        assert len(connections) == 1
        for _ in range(3):
            with pytest.raises(redis.ConnectionError, match="topology probe"):
                redis_topology.uses_cluster(auto, probe, clock=clock)
        assert len(connections) == 1, "a remembered failure must not connect again"
        clock.now += redis_topology.PROBE_FAILURE_SECONDS
        with pytest.raises(redis.TimeoutError):
            redis_topology.uses_cluster(auto, probe, clock=clock)
        assert len(connections) == 2, "after the window the server is asked again"


def test_the_answer_of_a_live_server_is_remembered(redis_port: int) -> None:
    probe = {"host": "127.0.0.1", "port": redis_port}
    auto = TopologySettings(cluster="auto")
    assert redis_topology.uses_cluster(auto, probe) is False
    assert ("127.0.0.1", redis_port) in redis_topology._detected
