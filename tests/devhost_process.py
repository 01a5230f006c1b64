"""The development host as a real process, as `make run` starts it."""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx

from .redis_server import free_port

REPO = Path(__file__).resolve().parent.parent


@contextmanager
def running_devhost(env: dict[str, str], *extra_args: str) -> Iterator[str]:
    """Start ``python -m agentstream_dev.devhost`` on a free port; yield its base URL."""
    with devhost_process(env, free_port(), *extra_args) as process:
        yield process.base_url


class DevHostProcess:
    """One development host process; a test may SIGKILL it and start another on its port."""

    def __init__(self, env: dict[str, str], port: int, extra_args: tuple[str, ...]) -> None:
        self.base_url = f"http://127.0.0.1:{port}"
        self._env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "OPENAI_"))}
        self._env.update(env)
        self._args = ["--port", str(port), *extra_args]
        # Closed in stop(); the log outlives each start so a restart appends to it.
        self._log = tempfile.NamedTemporaryFile("w+", prefix="devhost-", suffix=".log")  # noqa: SIM115
        self._process: ForkedHost | None = None

    def start(self) -> None:
        self._process = _zygote().start(self._args, self._env, Path(self._log.name))
        wait_until_serving(self.base_url, self._process, Path(self._log.name))

    def log_text(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        return Path(self._log.name).read_text(encoding="utf-8", errors="replace")

    def kill(self) -> None:
        """SIGKILL: the process dies mid-whatever, as a crashed worker does."""
        assert self._process is not None
        self._process.kill()
        self._process.wait(timeout=10)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self._log.close()


class ForkedHost:
    """A host forked by the zygote: the part of ``subprocess.Popen`` the tests use.

    The zygote, not this process, is its parent, and the kernel reaps it, so "exited" is "gone";
    its exit code is not known here (no test needs it).
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def poll(self) -> int | None:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return -1
        return None

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"development host {self.pid}", timeout)
            time.sleep(0.01)  # no exit notification reaches a process that is not the parent
        return -1

    def _signal(self, signum: int) -> None:
        with suppress(ProcessLookupError):
            os.kill(self.pid, signum)


class _Zygote:
    """One ``tests.devhost_zygote`` process per test process, started on first use."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.devhost_zygote"],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        atexit.register(self.close)

    def start(self, argv: list[str], env: dict[str, str], log: Path) -> ForkedHost:
        assert self._process.stdin is not None and self._process.stdout is not None
        request = {"argv": argv, "env": env, "cwd": str(REPO), "log": str(log)}
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        reply = self._process.stdout.readline()
        if not reply:
            raise RuntimeError("the development host zygote exited; run tests/devhost_zygote.py")
        return ForkedHost(int(reply))

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._process.wait(timeout=10)


_ZYGOTE: list[_Zygote] = []


def _zygote() -> _Zygote:
    if not _ZYGOTE:
        _ZYGOTE.append(_Zygote())
    return _ZYGOTE[0]


@contextmanager
def devhost_process(env: dict[str, str], port: int, *extra_args: str) -> Iterator[DevHostProcess]:
    process = DevHostProcess(env, port, extra_args)
    try:
        process.start()
        yield process
    finally:
        process.stop()


def wait_until_serving(
    base_url: str,
    process: subprocess.Popen | ForkedHost,
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
