"""The app under the real Python worker (``azure-functions-runtime``), for the benchmarks.

The worker harness (``tests/worker_host``) starts the worker as the Functions host does; the
benchmark clients then talk to the worker's own web server (the FastAPI extension's uvicorn) the
way the host's front door does: the HTTP request goes to the worker's ``HttpUri`` with an
``x-ms-invocation-id`` header, and the matching ``InvocationRequest`` follows over gRPC. Going
straight to the worker, not through the harness's Python front door, keeps the harness's own relay
out of the numbers (in Azure that relay is the host, not Python).
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tests.worker_host.front_door import INVOCATION_HEADER, _http_input
from tests.worker_host.harness import PYTHON_313, Harness, running_worker

STREAM_FUNCTION = "stream"


def worker_available() -> bool:
    """The harness needs the Python 3.13 environment (``make worker-venv``)."""
    return PYTHON_313.exists()


@dataclass
class WorkerApp:
    harness: Harness
    host: str
    port: int
    pid: int

    def header(self, invocation_id: str) -> str:
        return f"{INVOCATION_HEADER}: {invocation_id}\r\n"

    async def invoke_stream(self, invocation_id: str, route: dict[str, str]) -> None:
        """The host's half of one stream request: its ``InvocationRequest``."""
        info = self.harness.host.function(STREAM_FUNCTION)
        inputs = [_http_input(info.trigger["name"], route)]
        sent = asyncio.run_coroutine_threadsafe(
            self.harness.host.invoke(info, inputs, invocation_id), self.harness.loop
        )
        await asyncio.wrap_future(sent)


@contextmanager
def running_worker_app(env: dict[str, str]) -> Iterator[WorkerApp]:
    with (
        tempfile.NamedTemporaryFile(prefix="bench-worker-", suffix=".log") as log,
        running_worker(env, Path(log.name)) as harness,
    ):
        address = urlsplit(harness.host.http_uri)
        assert harness.host.process is not None
        pid = harness.host.process.pid
        yield WorkerApp(harness, address.hostname or "127.0.0.1", address.port or 80, pid)


def new_invocation_id() -> str:
    return str(uuid.uuid4())
