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

``--repeats N`` runs every variant N times, interleaved (so a machine whose load changes treats
them alike), and prints each row's medians with every run's p99 and load average beside them.
``--stacks`` compares the development host's server stacks (uvicorn on h11 or httptools, on
asyncio or uvloop); the worker always runs its own asyncio loop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis

from agentstream.events import RUN_QUEUED
from agentstream.streamlog.keys import stream_key
from agentstream.streamlog.runlog import RunLog

from .common import (
    RATE,
    SHIPPED_STACK,
    STACKS,
    Received,
    attach_clients,
    cpu_seconds,
    print_table,
    rss_mib,
    run_clients,
    running_redis_server,
    serving,
    stack_env,
    summary,
    token_latencies,
    write_results,
    write_stubs,
    write_tokens,
)
from .worker_host import WorkerApp, worker_available

SECONDS = 8.0
CONFIGS = [(1, 1), (100, 10), (1000, 10)]
MODES = ["hub", "blocking", "poll-1s"]
READER_POOL_NAMES = ("agentstream-readers", "agentstream-hub", "agentstream-blocking-readers")


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
    attach_started = time.monotonic()
    if mode == "poll-1s":
        tasks = [asyncio.create_task(polling_client(poll_client, r)) for r in received]
        await asyncio.wait_for(asyncio.gather(*(r.first.wait() for r in received)), 300)
    else:
        tasks = await attach_clients(host, port, received, worker)
    attach_seconds = time.monotonic() - attach_started
    reader_connections = sum(1 for c in sync.client_list() if c.get("name") in READER_POOL_NAMES)
    rss = rss_mib(pid) if pid is not None else float("nan")

    cpu_before = sum(cpu_seconds(pid)) if pid is not None else 0.0
    client_cpu_before = time.process_time()
    written = await write_tokens(str(redis_port), runs, int(RATE * SECONDS), tasks)
    cpu = sum(cpu_seconds(pid)) - cpu_before if pid is not None else float("nan")
    client_cpu = time.process_time() - client_cpu_before
    await poll_client.aclose()
    sync.close()

    token_latency, incomplete = token_latencies(received, written)
    write_latency: list[float] = []
    for r in received:
        appended = written[r.cid]["append_started"]
        write_latency.extend(at - appended[str(seq)] for seq, at in r.entries.items())
    deliveries = sum(len(r.entries) for r in received)
    token_summary = summary(token_latency)
    return {
        "mode": mode,
        "clients": clients,
        "streams": streams,
        "tokens_per_stream": int(RATE * SECONDS),
        "errors": incomplete,
        "token_to_client": token_summary,
        "max_over_p99": round(token_summary["max_ms"] / token_summary["p99_ms"], 2),
        "server_cpu_us_per_delivery": round(cpu / max(deliveries, 1) * 1e6, 2),
        "client_cpu_us_per_delivery": round(client_cpu / max(deliveries, 1) * 1e6, 2),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "write_to_client": summary(write_latency),
        "reader_redis_connections": reader_connections if mode != "poll-1s" else None,
        "worker_rss_mib": round(rss, 1) if rss == rss else None,
        "attach_seconds": round(attach_seconds, 2),
    }


def variants(hosts: list[str], modes: list[str], stacks: list[str]) -> list[tuple[str, str, str]]:
    """(host, reader, server stack) to measure; the worker serves the hub with its own stack."""
    chosen = []
    for host in hosts:
        if host == "worker" and not worker_available():
            print("worker: skipped, no Python 3.13 environment (make worker-venv)")
            continue
        for mode in modes:
            if host == "worker":
                if mode == "hub":
                    chosen.append((host, mode, "httptools"))
                continue
            chosen += [(host, mode, stack) for stack in stacks]
    return chosen


def measure(
    chosen: list[tuple[str, str, str]],
    configs: list[tuple[int, int]],
    repeats: int,
) -> dict[tuple[str, str, str, int, int], list[dict[str, Any]]]:
    """Every variant and configuration, ``repeats`` times over, interleaved."""
    runs: dict[tuple[str, str, str, int, int], list[dict[str, Any]]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="bench-stubs-") as stubs_dir,
        running_redis_server() as redis_port,
    ):
        write_stubs(Path(stubs_dir))
        for repeat in range(repeats):
            for host_name, mode, stack in chosen:
                env = {
                    "REDIS_CONNECTION_STRING": f"127.0.0.1:{redis_port}",
                    "STREAM_HUB": "false" if mode == "blocking" else "true",
                    **(stack_env(stack, Path(stubs_dir)) if host_name == "devhost" else {}),
                }
                with serving(host_name, env) as (host, port, pid, worker):
                    for clients, streams in configs:
                        print(
                            f"{host_name} {mode} {stack}: {clients} clients on {streams} streams"
                            f" (run {repeat + 1}) ...",
                            flush=True,
                        )
                        result = run_clients(
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
                        key = (host_name, mode, stack, clients, streams)
                        runs.setdefault(key, []).append(result)
    return runs


def median_row(
    key: tuple[str, str, str, int, int], measured: list[dict[str, Any]]
) -> dict[str, Any]:
    """One row: the medians over the runs, each run's p99 and load average beside them."""
    host, mode, stack, clients, streams = key

    def median(pick: Any) -> float:
        values = [pick(m) for m in measured]
        return float(statistics.median(values)) if None not in values else float("nan")

    return {
        "host": host,
        "mode": mode,
        "stack": stack,
        "clients": clients,
        "streams": streams,
        "errors": sum(m["errors"] for m in measured),
        "p50_ms": median(lambda m: m["token_to_client"]["p50_ms"]),
        "p99_ms": median(lambda m: m["token_to_client"]["p99_ms"]),
        "max_ms": median(lambda m: m["token_to_client"]["max_ms"]),
        "max_over_p99": median(lambda m: m["max_over_p99"]),
        "write_p99_ms": median(lambda m: m["write_to_client"]["p99_ms"]),
        "cpu_us_per_delivery": median(lambda m: m["server_cpu_us_per_delivery"]),
        "client_cpu_us_per_delivery": median(lambda m: m["client_cpu_us_per_delivery"]),
        "reader_connections": max((m["reader_redis_connections"] or 0 for m in measured), default=0)
        if mode != "poll-1s"
        else None,
        "rss_mib": median(lambda m: m["worker_rss_mib"]),
        "p99_runs": [m["token_to_client"]["p99_ms"] for m in measured],
        "loads": [m["load_average_1m"] for m in measured],
        "runs": measured,
    }


def print_rows(rows: list[dict[str, Any]]) -> None:
    print_table(
        [
            "host",
            "reader",
            "stack",
            "clients/streams",
            "errors",
            "token→client p50",
            "p99",
            "max",
            "max/p99",
            "write→client p99",
            "CPU µs/delivery",
            "clients' CPU",
            "reader conns",
            "RSS MiB",
            "p99 of each run",
            "load of each run",
        ],
        [
            [
                r["host"],
                r["mode"],
                r["stack"],
                f"{r['clients']}/{r['streams']}",
                r["errors"],
                r["p50_ms"],
                r["p99_ms"],
                r["max_ms"],
                r["max_over_p99"],
                r["write_p99_ms"],
                r["cpu_us_per_delivery"],
                r["client_cpu_us_per_delivery"],
                "-" if r["reader_connections"] is None else r["reader_connections"],
                r["rss_mib"],
                ", ".join(f"{v:.1f}" for v in r["p99_runs"]),
                ", ".join(f"{v:.2f}" for v in r["loads"]),
            ]
            for r in rows
        ],
    )
    print(
        "(milliseconds, medians over the runs; reader conns and RSS of the worker with all "
        "clients attached)"
    )


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="devhost,worker", help="devhost, worker or both")
    parser.add_argument("--modes", default=",".join(MODES), help="readers (the worker: hub)")
    parser.add_argument(
        "--stacks",
        default=SHIPPED_STACK,
        help=f"the development host's server stacks: {', '.join(STACKS)}",
    )
    parser.add_argument(
        "--configs",
        default=",".join(f"{c}/{s}" for c, s in CONFIGS),
        help="clients/streams, comma-separated",
    )
    parser.add_argument("--repeats", type=int, default=1, help="interleaved runs of each")
    args = parser.parse_args(argv)
    configs = [(int(c), int(s)) for c, s in (pair.split("/") for pair in args.configs.split(","))]
    chosen = variants(args.hosts.split(","), args.modes.split(","), args.stacks.split(","))
    rows = [
        median_row(key, measured)
        for key, measured in measure(chosen, configs, args.repeats).items()
    ]
    print()
    print_rows(rows)
    write_results(
        "latency",
        {
            "rate_tokens_per_second": RATE,
            "seconds": SECONDS,
            "results": rows,
        },
    )
    return rows


if __name__ == "__main__":
    main()
