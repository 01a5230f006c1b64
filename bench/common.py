"""What the benchmarks share: Redis and the development host as processes, the SSE clients and
the writer process of the live benchmarks, percentiles, output."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx

from agentstream.events import RUN_QUEUED, TERMINAL_TYPES
from tests.redis_server import free_port, running_redis_server

from .worker_host import WorkerApp, new_invocation_id, running_worker_app

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
AGENT = "travelplanner"
RATE = 50.0  # tokens per second per stream
T = TypeVar("T")

__all__ = ["REPO", "running_devhost", "running_redis_server", "summary", "write_results"]


@contextmanager
def running_devhost(env: dict[str, str], *, code: Path = REPO) -> Iterator[tuple[str, int, int]]:
    """``python -m agentstream_dev.devhost`` on a free port; yields (host, port, pid).

    ``code``: the checkout whose app it serves (an older one, for before/after comparisons).
    """
    port = free_port()
    process_env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "OPENAI_"))}
    process_env.update(env)
    with tempfile.NamedTemporaryFile("w+", prefix="bench-devhost-", suffix=".log") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "agentstream_dev.devhost", "--port", str(port)],
            cwd=code,
            env=process_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the development host did not start:\n{log.read()}")
                try:
                    httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=10)
                    break
                except httpx.ConnectError:
                    time.sleep(0.05)
            yield "127.0.0.1", port, process.pid
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


# The server stacks compared, by the packages hidden from uvicorn's ``auto`` choice. The worker
# runs uvicorn inside its own asyncio loop: there an app picks the HTTP parser, not the loop.
STACKS = {"h11": ("httptools", "uvloop"), "httptools": ("uvloop",), "httptools+uvloop": ()}
WORKER_STACKS = ("h11", "httptools")
SHIPPED_STACK = "httptools+uvloop"  # what uvicorn picks with the ``dev`` extra installed


def stack_env(stack: str, stubs: Path) -> dict[str, str]:
    """The environment that hides what ``stack`` does without from uvicorn's ``auto`` choice."""
    hidden = STACKS[stack]
    return {"PYTHONPATH": str(stubs / "-".join(hidden))} if hidden else {}


def write_stubs(directory: Path) -> None:
    """Per stack, a directory of packages that fail to import (uvicorn then falls back)."""
    for hidden in STACKS.values():
        if not hidden:
            continue
        for name in hidden:
            package = directory / "-".join(hidden) / name
            package.mkdir(parents=True, exist_ok=True)
            (package / "__init__.py").write_text(
                f"raise ImportError('{name} is hidden for this benchmark variant')\n"
            )


@contextmanager
def serving(
    host_name: str, env: dict[str, str], code: Path = REPO
) -> Iterator[tuple[str, int, int, WorkerApp | None]]:
    """The development host, or the app under the real worker: (host, port, pid, worker)."""
    if host_name == "worker":
        assert code == REPO, "the worker harness serves this checkout only"
        with running_worker_app(env) as worker:
            yield worker.host, worker.port, worker.pid, worker
    else:
        with running_devhost(env, code=code) as (host, port, pid):
            yield host, port, pid, None


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU time a process has used so far (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def summary(samples_seconds: Sequence[float]) -> dict[str, float]:
    """p50 / p99 / max in milliseconds."""
    if not samples_seconds:
        return {"n": 0, "p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    ordered = sorted(samples_seconds)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {
        "n": len(ordered),
        "p50_ms": round(pick(0.50), 2),
        "p99_ms": round(pick(0.99), 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_1m": round(load[0], 2),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_results(name: str, results: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **results}, indent=2) + "\n")
    print(f"\nwrote {path.relative_to(REPO)}")
    return path


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for index, row in enumerate(cells):
        print("  ".join(value.rjust(width) for value, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "-"
        return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


@dataclass
class Received:
    """What one client saw: when each token completed, when each entry arrived."""

    cid: str
    chars: int = 0
    tokens: list[float] = field(default_factory=list)
    entries: dict[int, float] = field(default_factory=dict)
    done: bool = False
    first: asyncio.Event = field(default_factory=asyncio.Event)
    # An SSE client's raw reads (arrival time, bytes), parsed by settle() once streaming is over.
    reads: list[tuple[float, bytes]] = field(default_factory=list)

    def event(self, event: dict[str, Any], now: float) -> None:
        self.first.set()
        if event["type"] == "message.delta":
            self.chars += len(event["text"])
            while len(self.tokens) < self.chars // 4:
                self.tokens.append(now)
        if event["type"] != RUN_QUEUED:
            self.entries[event["seq"]] = now
        if event["type"] in TERMINAL_TYPES:
            self.done = True

    def settle(self) -> None:
        """Parse the raw reads into events (after streaming: parsing would take CPU from the
        server while other clients still wait for their tokens)."""
        reads, self.reads = self.reads, []
        buffer, headers_done = b"", False
        for at, data in reads:
            buffer += data
            if not headers_done:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    continue
                buffer, headers_done = buffer[end + 4 :], True
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.startswith(b"data: "):
                    self.event(json.loads(line[6:]), at)


class _SseReads(asyncio.Protocol):
    """The client's end of one stream: each read's arrival time and bytes, nothing more.

    A protocol, not a stream reader: a read costs one callback, not a task wake-up, so the
    benchmark's thousand clients take less of the CPU they share with the server.
    """

    def __init__(self, request: bytes, received: Received) -> None:
        self._request = request
        self._received = received
        self.reads = received.reads
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.WriteTransport, transport).write(self._request)  # uvloop's: no subclass

    def data_received(self, data: bytes) -> None:
        self.reads.append((time.monotonic(), data))
        if not self._received.first.is_set() and b"event: run.queued" in data:
            self._received.first.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def sse_client(
    host: str, port: int, received: Received, worker: WorkerApp | None = None
) -> None:
    """A lean SSE client, so that the client is not the bottleneck.

    HTTP/1.0 (no chunked framing; the server closes the connection after the terminal event).
    It only notes each read's arrival time into ``received``; :meth:`Received.settle` parses
    them afterwards. Once the connection is closed it raises if the answer was not ``200`` (a
    ``503`` at capacity, say). With a ``worker``, it talks to the worker's own server as the
    Functions host does.
    """
    path = f"/api/agents/{AGENT}/conversations/{received.cid}/stream?cursor=0"
    invocation_id = new_invocation_id()
    extra = worker.header(invocation_id) if worker else ""
    request = f"GET {path} HTTP/1.0\r\nAccept: text/event-stream\r\n{extra}\r\n".encode()
    loop = asyncio.get_running_loop()
    transport, reads = await loop.create_connection(
        lambda: _SseReads(request, received), host, port
    )
    try:
        if worker is not None:
            await worker.invoke_stream(invocation_id, {"agent": AGENT, "cid": received.cid})
        await reads.closed
    finally:
        transport.close()
    status_line = b"".join(data for _, data in received.reads[:4]).split(b"\r\n", 1)[0]
    status = status_line.split(b" ", 2)[1] if status_line.count(b" ") >= 1 else b"none"
    if status != b"200":
        raise RuntimeError(f"stream answered {status.decode(errors='replace')}")


def run_clients(main: Coroutine[Any, Any, T]) -> T:
    """Run the benchmark's clients on uvloop when it is installed (the ``dev`` extra): they
    share the machine with the server, and uvloop spends less of it per read."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


async def attach_clients(
    host: str,
    port: int,
    received: Sequence[Received],
    worker: WorkerApp | None = None,
    *,
    wave: int | None = None,
    timeout: float = 300,
) -> list[asyncio.Task[None]]:
    """One :func:`sse_client` per ``received``, each attached (its first event read).

    ``wave``: open that many streams at a time, each wave attached before the next opens. A
    client that fails while attaching raises here rather than after the timeout.
    """
    tasks: list[asyncio.Task[None]] = []
    size = wave or len(received) or 1
    for start in range(0, len(received), size):
        batch = received[start : start + size]
        tasks += [asyncio.create_task(sse_client(host, port, r, worker)) for r in batch]
        attached = asyncio.ensure_future(asyncio.gather(*(r.first.wait() for r in batch)))
        deadline = time.monotonic() + timeout
        while not attached.done():
            failed = [t.exception() for t in tasks if t.done() and t.exception()]
            if failed or time.monotonic() > deadline:
                attached.cancel()
                waiting = sum(1 for r in batch if not r.first.is_set())
                raise RuntimeError(
                    f"{len(failed)} clients failed and {waiting} were not attached: {failed[:1]}"
                )
            await asyncio.wait([attached], timeout=0.2)  # checking for failed clients meanwhile
    return tasks


async def write_tokens(
    writer_address: str,
    runs: Sequence[tuple[str, str]],
    tokens: int,
    clients: Sequence[asyncio.Task[None]],
    *,
    code: Path = REPO,
    timeout: float = 300,
) -> dict[str, Any]:
    """Stream ``tokens`` tokens per run from ``bench.writer_process`` (``code``'s checkout) and
    wait until every client has read its stream to the end; returns the writer's record (per
    conversation: when each token was produced, when each entry's append began)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        writer = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.writer_process",
                writer_address,
                str(RATE),
                str(tokens),
                out.name,
                *(f"{cid}:{run}" for cid, run in runs),
            ],
            cwd=code,
        )
        try:
            await asyncio.wait_for(asyncio.gather(*clients), tokens / RATE + timeout)
        finally:
            if await asyncio.to_thread(writer.wait) != 0:
                raise RuntimeError("the writer process failed")
        written: dict[str, Any] = json.loads(Path(out.name).read_text())
    return written


def token_latencies(
    received: Sequence[Received], written: dict[str, Any]
) -> tuple[list[float], int]:
    """Every token's production → arrival time (seconds), and the clients that missed some.

    Settles every client's reads first (see :meth:`Received.settle`).
    """
    latencies: list[float] = []
    incomplete = 0
    for r in received:
        r.settle()
        produced = written[r.cid]["token_produced"]
        incomplete += len(r.tokens) != len(produced)
        latencies.extend(got - made for got, made in zip(r.tokens, produced, strict=False))
    return latencies, incomplete
