"""The development host as a real process, as `make run` starts it."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from .redis_server import free_port

REPO = Path(__file__).resolve().parent.parent


@contextmanager
def running_devhost(env: dict[str, str], *extra_args: str) -> Iterator[str]:
    """Start ``python -m agentstream.devhost`` on a free port; yield its base URL."""
    port = free_port()
    process_env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "OPENAI_"))}
    process_env.update(env)
    base_url = f"http://127.0.0.1:{port}"
    with tempfile.NamedTemporaryFile("w+", prefix="devhost-", suffix=".log") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "agentstream.devhost", "--port", str(port), *extra_args],
            cwd=REPO,
            env=process_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until_serving(base_url, process, Path(log.name))
            yield base_url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def wait_until_serving(
    base_url: str,
    process: subprocess.Popen,
    log: Path,
    timeout: float = 30,
    what: str = "the development host",
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited:\n{log.read_text()}")
        try:
            httpx.get(f"{base_url}/api/health", timeout=10)
            return
        except (httpx.ConnectError, httpx.RemoteProtocolError):
            time.sleep(0.05)  # the process signals readiness only by accepting connections
    raise RuntimeError(f"{what} did not start within {timeout:.0f} s:\n{log.read_text()}")
