"""A TCP proxy that cuts stream responses part-way: real dropped connections for clients."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .redis_server import free_port
from .tcp_server import serving_tcp


@dataclass
class ProxyStats:
    cuts: int = 0
    connections: int = 0


@dataclass
class _Exchange:
    streaming: bool = False
    sent: int = 0
    cut_after: int = 0


@contextmanager
def flaky_proxy(
    upstream_port: int, *, seed: int, min_bytes: int = 1500, max_bytes: int = 5000
) -> Iterator[tuple[str, ProxyStats]]:
    """Forward 127.0.0.1:<port> to ``upstream_port``; cut each ``/stream`` response after a
    random number of bytes (seeded). Other requests pass untouched."""
    chance = random.Random(seed)
    stats = ProxyStats()
    port = free_port()

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter):
        stats.connections += 1
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        exchange = _Exchange()

        async def to_upstream() -> None:
            while data := await client_reader.read(65536):
                first_line = data.split(b"\r\n", 1)[0]
                if first_line.startswith(b"GET ") and b"/stream" in first_line:
                    exchange.streaming = True
                    exchange.sent = 0
                    exchange.cut_after = chance.randint(min_bytes, max_bytes)
                elif first_line[:4] in (b"GET ", b"POST"):
                    exchange.streaming = False
                upstream_writer.write(data)
                await upstream_writer.drain()

        async def to_client() -> None:
            while data := await upstream_reader.read(65536):
                if exchange.streaming and exchange.sent + len(data) > exchange.cut_after:
                    client_writer.write(data[: max(0, exchange.cut_after - exchange.sent)])
                    stats.cuts += 1
                    return
                exchange.sent += len(data)
                client_writer.write(data)
                await client_writer.drain()

        tasks = [asyncio.create_task(to_upstream()), asyncio.create_task(to_client())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for writer in (client_writer, upstream_writer):
            writer.close()

    with serving_tcp(handle, port):
        yield f"http://127.0.0.1:{port}", stats
