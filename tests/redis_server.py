"""A real redis-server on a free loopback port, for tests and benchmarks."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agentstream_dev.local_redis import start_redis_server


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


class RestartableRedis:
    """A redis-server with an append-only file (fsync every second) that a test can SIGKILL and
    start again on the same port, as a crashed and restarted production server would be."""

    def __init__(self) -> None:
        self.port = free_port()
        self._workdir = Path(tempfile.mkdtemp(prefix="redis-aof-"))
        self._process: subprocess.Popen | None = None

    def start(self) -> None:
        self._process = start_redis_server(
            self.port, self._workdir, ["--appendonly", "yes", "--appendfsync", "everysec"]
        )

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final save; what was acknowledged is in the AOF."""
        assert self._process is not None
        self._process.send_signal(signal.SIGKILL)
        self._process.wait(timeout=10)

    def close(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=10)
        shutil.rmtree(self._workdir, ignore_errors=True)


@contextmanager
def restartable_redis() -> Iterator[RestartableRedis]:
    server = RestartableRedis()
    server.start()
    try:
        yield server
    finally:
        server.close()
