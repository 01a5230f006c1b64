"""A TCP proxy in front of a real redis-server that loses one reply on purpose.

``drop_reply_to(marker)`` arms it: the next command whose bytes contain ``marker`` is forwarded
to Redis, Redis executes it and answers, and the proxy then closes the client's connection
instead of relaying that answer. The client sees a dropped connection for a command that ran.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .redis_server import free_port
from .tcp_server import serving_tcp


@dataclass
class ReplyDropper:
    port: int
    armed: bytes | None = None
    dropped: int = 0

    def drop_reply_to(self, marker: bytes) -> None:
        self.armed = marker


@contextmanager
def reply_dropping_proxy(upstream_port: int) -> Iterator[ReplyDropper]:
    proxy = ReplyDropper(port=free_port())

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter):
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        lose_next_reply = False

        async def to_upstream() -> None:
            nonlocal lose_next_reply
            while data := await client_reader.read(65536):
                if proxy.armed is not None and proxy.armed in data:
                    proxy.armed = None
                    lose_next_reply = True
                upstream_writer.write(data)
                await upstream_writer.drain()

        async def to_client() -> None:
            while data := await upstream_reader.read(65536):
                if lose_next_reply:  # Redis has executed the command: its answer is here
                    proxy.dropped += 1
                    return
                client_writer.write(data)
                await client_writer.drain()

        tasks = [asyncio.create_task(to_upstream()), asyncio.create_task(to_client())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for writer in (client_writer, upstream_writer):
            writer.close()

    with serving_tcp(handle, proxy.port):
        yield proxy
