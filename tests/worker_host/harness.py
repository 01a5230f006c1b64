"""Start the whole harness from a test: worker host, front door, entity endpoint, on one loop.

The harness's asyncio loop runs in a background thread so tests stay plain synchronous code that
talks HTTP to ``Harness.base_url`` (the same API client the development-host tests use).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import uvicorn

from ..redis_server import free_port
from .front_door import EntityBatches, create_front_door
from .host import WorkerHost

REPO = Path(__file__).resolve().parents[2]
PYTHON_313 = REPO / ".venv313" / "bin" / "python"
T = TypeVar("T")


@dataclass
class Harness:
    base_url: str
    host: WorkerHost
    batches: EntityBatches
    loop: asyncio.AbstractEventLoop

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        """Run a coroutine on the harness's loop from the test's thread."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)


def worker_env(env: dict[str, str]) -> dict[str, str]:
    """The worker's environment: this process's, minus model/Azure settings, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "OPENAI_"))}
    return {**base, "FUNCTIONS_WORKER_RUNTIME": "python", "PYTHONUNBUFFERED": "1", **env}


@contextmanager
def running_worker(env: dict[str, str], log: Path, app_directory: Path = REPO) -> Iterator[Harness]:
    """The app under the real worker, reachable over HTTP; the worker is killed at the end.

    ``app_directory`` holds the ``function_app.py`` the worker indexes (the repository's, by
    default)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="harness-loop", daemon=True)
    thread.start()
    host = WorkerHost(PYTHON_313, app_directory, worker_env(env), log)
    harness = Harness("", host, EntityBatches(), loop)
    server: uvicorn.Server | None = None
    try:
        harness.call(host.start())
        app = create_front_door(host, loop, harness.batches)
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
        )
        serving = harness.call(_start_serving(server))
        harness.base_url = f"http://127.0.0.1:{port}"
        try:
            yield harness
        finally:
            server.should_exit = True
            harness.call(_finished(serving))
            harness.call(app.state.forwarder.aclose())
            app.state.entities.close()
    finally:
        harness.call(host.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


async def _start_serving(server: uvicorn.Server) -> asyncio.Future[None]:
    serving = asyncio.ensure_future(server.serve())
    while not server.started:
        if serving.done():
            serving.result()  # raises what stopped it
            raise RuntimeError("the front door stopped while starting")
        await asyncio.sleep(0.01)  # uvicorn exposes readiness only as this flag
    return serving


async def _finished(future: asyncio.Future[None]) -> None:
    await future


@contextmanager
def worker_log() -> Iterator[Path]:
    with tempfile.NamedTemporaryFile(prefix="worker-", suffix=".log") as log:
        yield Path(log.name)
