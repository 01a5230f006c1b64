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
    with devhost_process(env, *extra_args) as (base_url, _):
        yield base_url


@contextmanager
def devhost_process(
    env: dict[str, str], *extra_args: str
) -> Iterator[tuple[str, subprocess.Popen]]:
    """Like :func:`running_devhost`, also yielding the process (for tests that kill it)."""
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
            _wait_until_serving(base_url, process, Path(log.name))
            yield base_url, process
        finally:
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def _wait_until_serving(base_url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the development host exited:\n{log.read_text()}")
        try:
            httpx.get(f"{base_url}/api/health", timeout=10)
            return
        except httpx.ConnectError:
            time.sleep(0.05)  # the process signals readiness only by accepting connections
    raise RuntimeError("the development host did not start within 30 s")
