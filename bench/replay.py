"""Catch-up over HTTP: ``python -m bench.replay [--before DIR]``.

A finished run of 10,000 events is read through the development host (SSE): resumed from its middle
(5,000 events behind: the time until the last one arrived, and until the first), and from the start.
With ``--before DIR`` an older checkout's development host serves a stream its own code wrote,
and the two are measured interleaved, request by request. Also the cost of building the client's
JSON lines in process: spliced from the stored payload (what the app does) against decoding and
re-encoding every payload.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import redis

from agentstream.events import Event, dumps_line
from agentstream.streamlog.keys import stream_key

from .common import (
    REPO,
    cpu_seconds,
    print_table,
    running_devhost,
    running_redis_server,
    write_results,
)

EVENTS = 10_000
REPEATS = 21

# Runs with the measured checkout as its working directory: its keys, its append script.
_WRITE_RUN = """
import json, sys, uuid, redis
from agentstream.events import MESSAGE_DELTA, RUN_COMPLETED, RUN_QUEUED
from agentstream.streamlog.runlog import RunLog
client = redis.Redis(port=int(sys.argv[1]), decode_responses=True)
cid, events = uuid.uuid4().hex, int(sys.argv[2])
log = RunLog(client, cid, uuid.uuid4().hex, ttl_seconds=3600, maxlen=100_000)
ids = [log.append(RUN_QUEUED, {"message": "replay"}).id]
for i in range(events - 2):
    ids.append(log.append(MESSAGE_DELTA, {"text": f"Day {i}: a museum, then "}).id)
ids.append(log.append(RUN_COMPLETED, {"finish_reason": "stop", "usage": None}).id)
print(json.dumps({"cid": cid, "middle": ids[events // 2 - 1]}))
"""


async def timed_get(host: str, port: int, path: str) -> tuple[float, float, int]:
    """Seconds to the first event, seconds to the end of the response, events received."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n".encode())
    first = None
    chunks: list[bytes] = []
    while data := await reader.read(1 << 20):
        if first is None and b"\ndata: " in data:
            first = time.perf_counter() - started
        chunks.append(data)
    total = time.perf_counter() - started
    writer.close()
    body = b"".join(chunks)
    assert body.split(b" ", 2)[1] == b"200"
    return first or float("nan"), total, body.count(b"\ndata: ")


def encoding_cost(client: redis.Redis, cid: str) -> dict[str, float]:
    entries = client.xrange(stream_key(cid))
    started = time.perf_counter()
    spliced = [Event.from_entry(i, f).public_json() for i, f in entries]
    splice_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    decoded = [dumps_line(Event.from_entry(i, f).to_public()) for i, f in entries]
    decode_ms = (time.perf_counter() - started) * 1000
    assert spliced == decoded
    return {"spliced_ms": round(splice_ms, 1), "decode_and_reencode_ms": round(decode_ms, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="a checkout of the code to compare against")
    args = parser.parse_args(argv)
    codes = [("this", REPO)] + ([("before", args.before.resolve())] if args.before else [])
    measured: dict[str, dict[str, list[float]]] = {
        name: {"resume_total": [], "resume_first": [], "resume_cpu": [], "full_total": []}
        for name, _ in codes
    }
    loads: list[float] = []
    results: dict[str, Any] = {"events": EVENTS}
    with running_redis_server() as redis_port, ExitStack() as servers:
        env = {"REDIS_CONNECTION_STRING": f"127.0.0.1:{redis_port}"}
        targets = {}
        for name, code in codes:
            written = subprocess.run(
                [sys.executable, "-c", _WRITE_RUN, str(redis_port), str(EVENTS)],
                cwd=code,
                check=True,
                capture_output=True,
                text=True,
            )
            run = json.loads(written.stdout)
            host, port, pid = servers.enter_context(running_devhost(env, code=code))
            targets[name] = (host, port, pid, run)
        for _ in range(REPEATS):
            for name, (host, port, pid, run) in targets.items():
                base = f"/api/agents/travelplanner/conversations/{run['cid']}/stream"
                cpu_before = sum(cpu_seconds(pid))
                first, total, count = asyncio.run(
                    timed_get(host, port, f"{base}?cursor={run['middle']}")
                )
                measured[name]["resume_cpu"].append(sum(cpu_seconds(pid)) - cpu_before)
                assert count == EVENTS // 2, count
                measured[name]["resume_total"].append(total)
                measured[name]["resume_first"].append(first)
                _, total, count = asyncio.run(timed_get(host, port, f"{base}?cursor=0"))
                assert count == EVENTS, count
                measured[name]["full_total"].append(total)
                loads.append(os.getloadavg()[0])
        client = redis.Redis(port=redis_port, decode_responses=True)
        results["json_lines_in_process_10000"] = encoding_cost(client, targets["this"][3]["cid"])
    rows = []
    for name, series in measured.items():
        results[name] = {
            key: {
                # CPU time comes in clock ticks (10 ms): the mean of many requests resolves it.
                "median_ms": round(
                    (statistics.mean if key == "resume_cpu" else statistics.median)(values) * 1000,
                    2,
                ),
                "best_ms": round(min(values) * 1000, 2),
            }
            for key, values in series.items()
        }
        for key, label in (
            ("resume_total", "resume 5,000 behind: all events"),
            ("resume_first", "resume 5,000 behind: first event"),
            ("resume_cpu", "resume 5,000 behind: the server's CPU (mean)"),
            ("full_total", "replay 10,000 from the start"),
        ):
            row = results[name][key]
            rows.append([name, label, row["median_ms"], row["best_ms"]])
    print_table(["code", "measure", "median ms", "best ms"], rows)
    cost = results["json_lines_in_process_10000"]
    print(
        f"\n(SSE over HTTP, medians of {REPEATS} interleaved requests; load average "
        f"{min(loads):.1f}–{max(loads):.1f})\nJSON lines for 10,000 events in process: spliced "
        f"{cost['spliced_ms']} ms, decoded and re-encoded {cost['decode_and_reencode_ms']} ms"
    )
    results["load_average_1m"] = loads
    write_results("replay", results)


if __name__ == "__main__":
    main()
