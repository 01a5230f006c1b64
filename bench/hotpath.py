"""Where the worker's CPU goes for one event to one reader: ``python -m bench.hotpath``.

For each variant — the code (this checkout, or an older one given with ``--before DIR``) and the
server stack (uvicorn on h11 + asyncio, or on httptools + uvloop) — SSE clients read a writer's
tokens (50 per second per stream, another process) through the development host, which runs under
the py-spy sampling profiler. Variants are interleaved and repeated, so that a machine whose load
changes during the run treats them alike. Per variant:

- the server's CPU per delivery (one event to one reader): its user + system CPU time over the
  streaming window divided by the events its readers received. CPU time, not wall time: other
  processes on the machine stretch it far less than they stretch latency;
- that CPU split by layer, from py-spy's samples (each sample counts for the deepest layer on its
  stack): Redis read, hub fan-out (hub and reader), encode (frames), ASGI send (the response and the
  Starlette/FastAPI layers above the server), server write (uvicorn's protocol, h11/httptools, the
  transport), event loop (scheduling and wake-ups), request setup (opening streams), other;
- token → client p50 / p99 / max and the 1-minute load average beside them.

``--clients`` readers share ``--streams`` streams. The default (200 on 10) keeps the worker below
saturation, so each event is about one write per reader; at 1,000 readers batches grow and the cost
per delivery falls (``--clients 1000``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from .common import (
    RATE,
    REPO,
    STACKS,
    WORKER_STACKS,
    Received,
    attach_clients,
    cpu_seconds,
    print_table,
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
from .worker_host import WorkerApp

# (name, patterns): a frame (``function (file:line)``, py-spy shortens some paths to the file's
# name) belongs to the first layer one of whose patterns its text holds; a sample counts for the
# layer of its deepest frame that belongs to one. Samples of the server starting (imports) are
# left out.
STARTUP = ("importlib",)  # a module imported late (rare while streaming)
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "request setup",
        (
            "devhost/app.py:",
            "stream (handlers.py:",
            "stream (agentstream/api/handlers.py:",
            "control.py:",
            "open_stream",
            "_start_position",
        ),
    ),
    (
        "server write",
        (
            "uvicorn/protocols/",
            "h11/",
            "httptools",
            "_SelectorSocketTransport.write",
            "_SelectorTransport.write",
        ),
    ),
    ("Redis read", ("redis/", "hiredis", "from_entry")),
    ("encode", ("(events.py:", "agentstream/events.py:")),
    ("ASGI send", ("starlette/", "fastapi/", "streaming.py:", "_encoded (")),
    ("hub fan-out", ("hub.py:", "reader.py:")),
    ("event loop", ("asyncio/", "uvloop/", "uvicorn/")),
]
LAYER_NAMES = [name for name, _ in LAYERS] + ["other"]


def classify(stack: list[str]) -> str:
    """The layer of the deepest frame that belongs to one (``stack`` runs root to leaf).

    The event loop counts only where no other layer is on the stack: a future woken by the hub
    or a transport write under the server belongs to those.
    """
    for frame in reversed(stack):
        for name, patterns in LAYERS[:-1]:
            if any(p in frame for p in patterns):
                return name
    if any(p in frame for frame in stack for p in LAYERS[-1][1]):
        return LAYERS[-1][0]
    return "other"


def layer_shares(raw_profile: Path) -> dict[str, float]:
    """py-spy's raw output (``frame;frame;... count`` lines) as each layer's share of samples."""
    counts: Counter[str] = Counter()
    for line in raw_profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit() and not any(s in stack for s in STARTUP):
            counts[classify(stack.split(";"))] += int(count)
    total = sum(counts.values()) or 1
    return {name: counts[name] / total for name in LAYER_NAMES}


async def stream_once(
    redis_port: int,
    host: str,
    port: int,
    server_pid: int,
    profile: Path,
    clients: int,
    streams: int,
    seconds: float,
    worker: WorkerApp | None,
    code: Path,
) -> dict[str, Any]:
    sync = redis.Redis(port=redis_port, decode_responses=True)
    runs = [(uuid.uuid4().hex, uuid.uuid4().hex) for _ in range(streams)]
    # The checkout being measured writes the streams (its keys, its append script).
    subprocess.run(
        [sys.executable, "-c", _QUEUE_RUNS, str(redis_port), *(f"{c}:{r}" for c, r in runs)],
        cwd=code,
        check=True,
    )
    received = [Received(runs[i % streams][0]) for i in range(clients)]
    tasks = await attach_clients(host, port, received, worker)
    with profiling(server_pid, profile):
        cpu_before = cpu_seconds(server_pid)
        calls_before = _xreads(sync)
        written = await write_tokens(str(redis_port), runs, int(RATE * seconds), tasks, code=code)
        user, system = (
            after - before
            for after, before in zip(cpu_seconds(server_pid), cpu_before, strict=True)
        )
        calls = _xreads(sync) - calls_before
    sync.close()
    latency, errors = token_latencies(received, written)
    deliveries = sum(len(r.entries) for r in received)
    return {
        "cpu_seconds": user + system,
        "system_seconds": system,
        "deliveries": deliveries,
        "xread_calls": calls,
        "errors": errors,
        "token_to_client": summary(latency),
    }


_QUEUE_RUNS = """
import sys, redis
from agentstream.events import RUN_QUEUED
from agentstream.streamlog.runlog import RunLog
client = redis.Redis(port=int(sys.argv[1]), decode_responses=True)
for pair in sys.argv[2:]:
    cid, run = pair.split(":")
    RunLog(client, cid, run, ttl_seconds=600, maxlen=100_000).append(RUN_QUEUED, {"message": "b"})
"""


def _xreads(client: redis.Redis) -> int:
    """``XREAD`` calls Redis has served so far (only the worker's readers issue them)."""
    return int(client.info("commandstats").get("cmdstat_xread", {}).get("calls", 0))


@contextmanager
def profiling(pid: int, output: Path) -> Iterator[None]:
    """py-spy samples ``pid`` (only while it runs Python: ``--gil``) until the block ends."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    command = [py_spy, "record", "-r", "500", "-f", "raw", "--gil", "--nonblocking"]
    sampler = subprocess.Popen(
        [*command, "-o", str(output), "-p", str(pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        sampler.send_signal(signal.SIGINT)  # it writes what it saw, then exits
        sampler.wait(timeout=60)


def run_variant(
    host_name: str, code: Path, stack: str, stubs: Path, redis_port: int, args: argparse.Namespace
) -> dict[str, Any]:
    env = {"REDIS_CONNECTION_STRING": f"127.0.0.1:{redis_port}", **stack_env(stack, stubs)}
    with tempfile.TemporaryDirectory(prefix="bench-hotpath-") as tmp:
        profile = Path(tmp) / "profile.txt"
        with serving(host_name, env, code) as (host, port, pid, worker):
            load = os.getloadavg()[0]
            result = run_clients(
                stream_once(
                    redis_port,
                    host,
                    port,
                    pid,
                    profile,
                    args.clients,
                    args.streams,
                    args.seconds,
                    worker,
                    code,
                )
            )
        result["layers"] = layer_shares(profile) if profile.exists() else {}
    result["load_average_1m"] = round(load, 2)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="a checkout of the code to compare against")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--stacks", default=",".join(STACKS), help=", ".join(STACKS))
    parser.add_argument("--hosts", default="devhost,worker", help="devhost, worker or both")
    args = parser.parse_args(argv)
    codes = [("after", REPO)] + ([("before", args.before.resolve())] if args.before else [])
    variants = [
        (host, code_name, code, stack)
        for host in args.hosts.split(",")
        for code_name, code in codes
        for stack in args.stacks.split(",")
        if host == "devhost" or (code == REPO and stack in WORKER_STACKS)
    ]
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-stubs-") as stubs_dir:
        stubs = Path(stubs_dir)
        write_stubs(stubs)
        with running_redis_server() as redis_port:
            for repeat in range(args.repeats):
                for host, code_name, code, stack in variants:
                    name = f"{host} {code_name} {stack}"
                    print(f"{name} (run {repeat + 1}) ...", flush=True)
                    runs.setdefault(name, []).append(
                        run_variant(host, code, stack, stubs, redis_port, args)
                    )
    rows = []
    results = []
    for name, measured in runs.items():
        cpu = sum(m["cpu_seconds"] for m in measured)
        deliveries = sum(m["deliveries"] for m in measured) or 1
        per_delivery_us = cpu / deliveries * 1e6
        kernel_us = sum(m["system_seconds"] for m in measured) / deliveries * 1e6
        shares = {
            layer: sum(m["layers"].get(layer, 0.0) * m["cpu_seconds"] for m in measured) / cpu
            for layer in LAYER_NAMES
        }
        best = min(measured, key=lambda m: m["token_to_client"]["p99_ms"])
        results.append(
            {
                "variant": name,
                "cpu_us_per_delivery": round(per_delivery_us, 2),
                "kernel_us_per_delivery": round(kernel_us, 2),
                "layer_us_per_delivery": {
                    layer: round(per_delivery_us * share, 2) for layer, share in shares.items()
                },
                "runs": measured,
            }
        )
        rows.append(
            [
                name,
                per_delivery_us,
                kernel_us,
                *(per_delivery_us * shares[layer] for layer in LAYER_NAMES),
                ", ".join(str(m["token_to_client"]["p99_ms"]) for m in measured),
                best["token_to_client"]["max_ms"],
                sum(m["errors"] for m in measured),
                ", ".join(str(m["load_average_1m"]) for m in measured),
            ]
        )
    print()
    print(f"{args.clients} clients on {args.streams} streams, {RATE:.0f} tokens/s per stream")
    print_table(
        [
            "variant",
            "CPU µs/delivery",
            "of it kernel",
            *LAYER_NAMES,
            "p99 ms (runs)",
            "max ms",
            "errors",
            "load",
        ],
        rows,
    )
    print("(µs of the server's CPU per event delivered to one reader, split by layer)")
    write_results(
        f"hotpath-{args.clients}",
        {"clients": args.clients, "streams": args.streams, "results": results},
    )


if __name__ == "__main__":
    main()
