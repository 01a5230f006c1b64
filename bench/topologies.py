"""The stream hub on a single Redis, a one-node and a 3-shard Redis Cluster:
``python -m bench.topologies``.

1,000 SSE clients on 10 streams through one development-host process, with a writer in another
process (``bench.writer_process``) streaming four-character tokens at 50 per second per stream
(as ``bench.latency``). For each topology the hub (``STREAM_HUB=true``) and one blocking read per
reader (``STREAM_HUB=false``) side by side: token → client p50 / p99, the Redis connections the
worker holds for its readers with every client attached (``CLIENT LIST`` on every node: in all,
and on the busiest node), and the most hub connections (``agentstream-hub``) any node saw while
the tokens streamed, against the bound ``STREAM_HUB_CONNECTIONS`` (4).

``--burst``: instead, the thousand clients open their streams at one instant (not in waves of a
hundred) through the hub, and the answers that were ``503 at_capacity`` are counted.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from agentstream.events import RUN_QUEUED
from agentstream.streamlog.runlog import RunLog
from tests.redis_cluster import running_cluster
from tests.redis_connections import ConnectionPeaks

from .common import (
    RATE,
    Received,
    attach_clients,
    print_table,
    run_clients,
    running_devhost,
    running_redis_server,
    sse_client,
    summary,
    token_latencies,
    write_results,
    write_tokens,
)
from .latency import READER_POOL_NAMES, SECONDS

CLIENTS, STREAMS = 1000, 10
WAVE = 100  # clients that open their stream together
MODES = ["hub", "blocking"]
TOPOLOGIES = ["single", "cluster-1-node", "cluster-3-shards"]
HUB_BOUND = 4  # STREAM_HUB_CONNECTIONS' default


@contextmanager
def topology(name: str) -> Iterator[tuple[str, list[int], redis.Redis]]:
    """(writer address, every node's port, a client for the test's own writes)."""
    if name == "single":
        with running_redis_server() as port:
            yield str(port), [port], redis.Redis(port=port, decode_responses=True)
    else:
        shape = (1, 0) if name == "cluster-1-node" else (3, 1)
        with running_cluster(*shape) as cluster:
            ports = [node.port for node in cluster.nodes]
            client = redis.RedisCluster(host="127.0.0.1", port=cluster.port, decode_responses=True)
            yield f"cluster:{cluster.port}", ports, client


def reader_connections(ports: list[int]) -> tuple[int, int]:
    """The worker's reader connections: in all, and on the node that holds the most."""
    counts = []
    for port in ports:
        with redis.Redis(port=port, decode_responses=True) as node:
            counts.append(sum(1 for c in node.client_list() if c["name"] in READER_POOL_NAMES))
    return sum(counts), max(counts)


async def run(
    writer_address: str, ports: list[int], client: redis.Redis, host: str, port: int
) -> dict[str, Any]:
    """Clients attached in waves, then the tokens streamed and timed."""
    runs = [(uuid.uuid4().hex, uuid.uuid4().hex) for _ in range(STREAMS)]
    for cid, run_id in runs:
        RunLog(client, cid, run_id, ttl_seconds=600, maxlen=100_000).append(
            RUN_QUEUED, {"message": "bench"}
        )
    received = [Received(runs[i % STREAMS][0]) for i in range(CLIENTS)]
    # In waves: one worker meeting a thousand stream opens at once answers part of them with
    # 503 at_capacity on a cluster (docs/architecture.md); what is measured here is streaming.
    tasks = await attach_clients(host, port, received, wave=WAVE)
    total, busiest = reader_connections(ports)
    with ConnectionPeaks(ports, {"hub": ("agentstream-hub",)}) as hub_peaks:
        written = await write_tokens(writer_address, runs, int(RATE * SECONDS), tasks)
    latency, incomplete = token_latencies(received, written)
    return {
        "errors": incomplete,
        "token_to_client": summary(latency),
        "reader_connections": total,
        "reader_connections_busiest_node": busiest,
        "hub_connections_per_node": sorted(hub_peaks.peaks["hub"].values(), reverse=True),
    }


async def burst(client: redis.Redis, host: str, port: int) -> dict[str, Any]:
    """A thousand stream opens at one instant: how many are answered ``503``."""
    runs = [(uuid.uuid4().hex, uuid.uuid4().hex) for _ in range(STREAMS)]
    logs = [RunLog(client, cid, run_id, ttl_seconds=600, maxlen=100_000) for cid, run_id in runs]
    for log in logs:
        log.append(RUN_QUEUED, {"message": "bench"})
    received = [Received(runs[i % STREAMS][0]) for i in range(CLIENTS)]
    tasks = [asyncio.create_task(sse_client(host, port, r)) for r in received]
    deadline = time.monotonic() + 300
    pairs = list(zip(received, tasks, strict=True))
    while not all(r.first.is_set() or t.done() for r, t in pairs):
        if time.monotonic() > deadline:
            raise RuntimeError("clients neither attached nor failed")
        await asyncio.sleep(0.2)  # polling: attached (an event) or answered (a finished task)
    for log in logs:
        log.append("run.completed", {"finish_reason": "stop", "usage": None})
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    refused = sum(1 for o in outcomes if isinstance(o, RuntimeError) and "503" in str(o))
    failed = sum(1 for o in outcomes if isinstance(o, BaseException)) - refused
    return {"clients": CLIENTS, "at_capacity_503": refused, "other_failures": failed}


def main_burst() -> None:
    results = []
    for name in TOPOLOGIES:
        with topology(name) as (_, ports, client):
            env = {"REDIS_CONNECTION_STRING": f"127.0.0.1:{ports[0]}"}
            with running_devhost(env) as (host, port, _pid):
                result = asyncio.run(burst(client, host, port))
            client.close()
        results.append({"topology": name, **result})
        print(f"{name}: {result}", flush=True)
    print_table(
        ["topology", "clients", "503 at_capacity", "other failures"],
        [[r["topology"], r["clients"], r["at_capacity_503"], r["other_failures"]] for r in results],
    )
    write_results("topologies-burst", {"clients": CLIENTS, "streams": STREAMS, "results": results})


def main() -> None:
    results = []
    for name in TOPOLOGIES:
        for mode in MODES:
            print(f"{name}, {mode}: {CLIENTS} clients on {STREAMS} streams ...", flush=True)
            with topology(name) as (writer_address, ports, client):
                env = {
                    "REDIS_CONNECTION_STRING": f"127.0.0.1:{ports[0]}",
                    "STREAM_HUB": "false" if mode == "blocking" else "true",
                }
                started = time.monotonic()
                with running_devhost(env) as (host, port, _pid):
                    result = run_clients(run(writer_address, ports, client, host, port))
                client.close()
            results.append({"topology": name, "mode": mode, **result})
            print(f"  done in {time.monotonic() - started:.0f} s", flush=True)
    print()
    print_table(
        [
            "topology",
            "reader",
            "errors",
            "token→client p50",
            "p99",
            "conns",
            "busiest node",
            f"hub per node (≤ {HUB_BOUND})",
        ],
        [
            [
                r["topology"],
                r["mode"],
                r["errors"],
                r["token_to_client"]["p50_ms"],
                r["token_to_client"]["p99_ms"],
                r["reader_connections"],
                r["reader_connections_busiest_node"],
                "/".join(str(n) for n in r["hub_connections_per_node"]),
            ]
            for r in results
        ],
    )
    print(
        "(milliseconds; the worker's reader connections with all clients attached; the most hub"
        " connections each node saw while the tokens streamed)"
    )
    write_results(
        "topologies",
        {"clients": CLIENTS, "streams": STREAMS, "rate": RATE, "results": results},
    )


if __name__ == "__main__":
    if "--burst" in sys.argv[1:]:
        main_burst()
    else:
        main()
