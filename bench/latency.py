"""Live latency through the development host: ``python -m bench.latency``.

For 1 client on 1 stream, 100 clients on 10 streams and 1,000 clients on 10 streams, a writer in
another process (``bench.writer_process``) streams four-character tokens at 50 per second per
stream. Three readers side by side:

- ``hub``: the app as shipped (``STREAM_HUB=true``), SSE over HTTP from the development host;
- ``blocking``: the app with ``STREAM_HUB=false``, one ``XREAD BLOCK`` per reader;
- ``poll-1s``: the simplest design in common use, a reader that reads whatever is new and then
  sleeps a second. It runs in the benchmark process straight against Redis (no HTTP hop, which
  only flatters it).

Latencies: *token → client* runs from the moment the writer produced a token (so the coalescing
wait is included) to the moment its last character reached the client; *write → client* from the
moment the writer began the entry's append. Also: the Redis connections the worker holds for its
readers, and the worker's RSS, with 1,000 readers attached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aioredis

from agentstream.events import RUN_QUEUED, TERMINAL_TYPES
from agentstream.streamlog.keys import stream_key
from agentstream.streamlog.runlog import RunLog

from .common import (
    REPO,
    cpu_seconds,
    print_table,
    rss_mib,
    running_devhost,
    running_redis_server,
    summary,
    write_results,
)
from .worker_host import WorkerApp, new_invocation_id, running_worker_app, worker_available

AGENT = "travelplanner"
RATE = 50.0  # tokens per second per stream
SECONDS = 8.0
CONFIGS = [(1, 1), (100, 10), (1000, 10)]
MODES = ["hub", "blocking", "poll-1s"]
READER_POOL_NAMES = ("agentstream-readers", "agentstream-hub", "agentstream-blocking-readers")


@dataclass
class Received:
    """What one client saw: when each token completed, when each entry arrived."""

    cid: str
    chars: int = 0
    tokens: list[float] = field(default_factory=list)
    entries: dict[int, float] = field(default_factory=dict)
    done: bool = False
    first: asyncio.Event = field(default_factory=asyncio.Event)

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


async def sse_client(
    host: str, port: int, received: Received, worker: WorkerApp | None = None
) -> None:
    """A lean SSE client, so that the client is not the bottleneck.

    HTTP/1.0 (no chunked framing; the server closes the connection after the terminal event).
    While streaming it only notes each read's arrival time; parsing happens afterwards. With a
    ``worker``, it talks to the worker's own server as the Functions host does.
    """
    reader, writer = await asyncio.open_connection(host, port)
    path = f"/api/agents/{AGENT}/conversations/{received.cid}/stream?cursor=0"
    invocation_id = new_invocation_id()
    extra = worker.header(invocation_id) if worker else ""
    writer.write(f"GET {path} HTTP/1.0\r\nAccept: text/event-stream\r\n{extra}\r\n".encode())
    if worker is not None:
        await writer.drain()
        await worker.invoke_stream(invocation_id, {"agent": AGENT, "cid": received.cid})
    reads: list[tuple[float, bytes]] = []
    try:
        while data := await reader.read(65536):
            reads.append((time.monotonic(), data))
            if not received.first.is_set() and b"event: run.queued" in data:
                received.first.set()
    finally:
        writer.close()
    buffer, headers_done = b"", False
    for at, data in reads:
        buffer += data
        if not headers_done:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                continue
            status = buffer.split(b" ", 2)[1]
            if status != b"200":
                raise RuntimeError(f"stream answered {status.decode()}")
            buffer, headers_done = buffer[end + 4 :], True
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.startswith(b"data: "):
                received.event(json.loads(line[6:]), at)


async def polling_client(client: aioredis.Redis, received: Received) -> None:
    """The 1-second polling design: read what is new, hand it over, sleep a second."""
    last = "0-0"
    while not received.done:
        reply = await client.xread({stream_key(received.cid): last}, count=1000)
        now = time.monotonic()
        for entry_id, fields in reply[0][1] if reply else ():
            last = entry_id
            event = {"type": fields["type"], "seq": int(fields["seq"])}
            event.update(json.loads(fields["data"]))
            received.event(event, now)
        if not received.done:
            await asyncio.sleep(1.0)


async def run_config(
    mode: str,
    clients: int,
    streams: int,
    redis_port: int,
    host: str,
    port: int,
    pid: int | None,
    worker: WorkerApp | None = None,
) -> dict[str, Any]:
    sync = redis.Redis(port=redis_port, decode_responses=True)
    runs = [(uuid.uuid4().hex, uuid.uuid4().hex) for _ in range(streams)]
    for cid, run_id in runs:
        RunLog(sync, cid, run_id, ttl_seconds=600, maxlen=100_000).append(
            RUN_QUEUED, {"message": "bench"}
        )
    received = [Received(runs[i % streams][0]) for i in range(clients)]
    poller = aioredis.BlockingConnectionPool(
        port=redis_port, decode_responses=True, max_connections=50, timeout=60
    )
    poll_client = aioredis.Redis(connection_pool=poller)
    if mode == "poll-1s":
        tasks = [asyncio.create_task(polling_client(poll_client, r)) for r in received]
    else:
        tasks = [asyncio.create_task(sse_client(host, port, r, worker)) for r in received]
    attach_started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(r.first.wait() for r in received)), 300)
    attach_seconds = time.monotonic() - attach_started
    reader_connections = sum(1 for c in sync.client_list() if c.get("name") in READER_POOL_NAMES)
    rss = rss_mib(pid) if pid is not None else float("nan")

    tokens = int(RATE * SECONDS)
    cpu_before = sum(cpu_seconds(pid)) if pid is not None else 0.0
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        writer = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.writer_process",
                str(redis_port),
                str(RATE),
                str(tokens),
                out.name,
                *(f"{cid}:{run}" for cid, run in runs),
            ],
            cwd=REPO,
        )
        await asyncio.wait_for(asyncio.gather(*tasks), SECONDS + 300)
        cpu = sum(cpu_seconds(pid)) - cpu_before if pid is not None else float("nan")
        if await asyncio.to_thread(writer.wait) != 0:
            raise RuntimeError("the writer process failed")
        with open(out.name) as file:
            written = json.load(file)
    await poll_client.aclose()

    token_latency: list[float] = []
    write_latency: list[float] = []
    incomplete = 0
    for r in received:
        produced = written[r.cid]["token_produced"]
        appended = written[r.cid]["append_started"]
        if len(r.tokens) != len(produced):
            incomplete += 1
        token_latency.extend(got - made for got, made in zip(r.tokens, produced, strict=False))
        write_latency.extend(at - appended[str(seq)] for seq, at in r.entries.items())
    deliveries = sum(len(r.entries) for r in received)
    token_summary = summary(token_latency)
    return {
        "host": "worker" if worker else "devhost",
        "mode": mode,
        "clients": clients,
        "streams": streams,
        "tokens_per_stream": tokens,
        "errors": incomplete,
        "token_to_client": token_summary,
        "max_over_p99": round(token_summary["max_ms"] / token_summary["p99_ms"], 2),
        "server_cpu_us_per_delivery": round(cpu / max(deliveries, 1) * 1e6, 2),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "write_to_client": summary(write_latency),
        "reader_redis_connections": reader_connections if mode != "poll-1s" else None,
        "worker_rss_mib": round(rss, 1) if rss == rss else None,
        "attach_seconds": round(attach_seconds, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="devhost,worker", help="devhost, worker or both")
    parser.add_argument("--modes", default=",".join(MODES), help="readers (the worker: hub)")
    args = parser.parse_args(argv)
    results: list[dict[str, Any]] = []
    with running_redis_server() as redis_port:
        for host_name in args.hosts.split(","):
            if host_name == "worker" and not worker_available():
                print("worker: skipped, no Python 3.13 environment (make worker-venv)")
                continue
            for mode in args.modes.split(","):
                if host_name == "worker" and mode != "hub":
                    continue
                env = {
                    "REDIS_CONNECTION_STRING": f"127.0.0.1:{redis_port}",
                    "STREAM_HUB": "false" if mode == "blocking" else "true",
                }
                with serving(host_name, env) as (host, port, pid, worker):
                    for clients, streams in CONFIGS:
                        print(f"{host_name} {mode}: {clients} clients on {streams} streams ...")
                        result = asyncio.run(
                            run_config(
                                mode,
                                clients,
                                streams,
                                redis_port,
                                host,
                                port,
                                None if mode == "poll-1s" else pid,
                                worker,
                            )
                        )
                        results.append(result)
    print()
    print_table(
        [
            "host",
            "reader",
            "clients/streams",
            "errors",
            "token→client p50",
            "p99",
            "max",
            "max/p99",
            "write→client p99",
            "CPU µs/delivery",
            "reader conns",
            "RSS MiB",
            "load",
        ],
        [
            [
                r["host"],
                r["mode"],
                f"{r['clients']}/{r['streams']}",
                r["errors"],
                r["token_to_client"]["p50_ms"],
                r["token_to_client"]["p99_ms"],
                r["token_to_client"]["max_ms"],
                r["max_over_p99"],
                r["write_to_client"]["p99_ms"],
                r["server_cpu_us_per_delivery"],
                "-" if r["reader_redis_connections"] is None else r["reader_redis_connections"],
                "-" if r["worker_rss_mib"] is None else r["worker_rss_mib"],
                r["load_average_1m"],
            ]
            for r in results
        ],
    )
    print("(milliseconds; reader conns and RSS of the worker with all clients attached)")
    write_results(
        "latency",
        {"rate_tokens_per_second": RATE, "seconds": SECONDS, "results": results},
    )


@contextmanager
def serving(
    host_name: str, env: dict[str, str]
) -> Iterator[tuple[str, int, int, WorkerApp | None]]:
    """The development host, or the app under the real worker: (host, port, pid, worker)."""
    if host_name == "worker":
        with running_worker_app(env) as worker:
            yield worker.host, worker.port, worker.pid, worker
    else:
        with running_devhost(env) as (host, port, pid):
            yield host, port, pid, None


if __name__ == "__main__":
    main()
