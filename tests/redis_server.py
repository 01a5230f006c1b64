"""A real redis-server on a free loopback port, for tests and benchmarks."""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agentstream.local_redis import start_redis_server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_redis_server() -> Iterator[int]:
    """Start ``redis-server`` without persistence; yield its port; stop it."""
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="redis-test-"))
    process = start_redis_server(port, workdir)
    try:
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
