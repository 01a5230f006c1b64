"""Replay over HTTP: ``python -m bench.replay``.

A finished run of 5,000 events is read from the start through the development host (SSE, the
whole response), and resumed from its middle (time to the first event). Also the cost of
building the client's JSON lines in process: spliced from the stored payload (what the app
does) against decoding and re-encoding every payload.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from typing import Any

import redis

from agentstream.events import MESSAGE_DELTA, RUN_COMPLETED, RUN_QUEUED, Event, dumps_line
from agentstream.streamlog.keys import stream_key
from agentstream.streamlog.runlog import RunLog

from .common import print_table, running_devhost, running_redis_server, write_results

EVENTS = 5000
REPEATS = 15


async def timed_get(host: str, port: int, path: str) -> tuple[float, float, int]:
    """Seconds to the first event, seconds to the end of the response, events received."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n".encode())
    first = None
    body = b""
    while data := await reader.read(262144):
        body += data
        if first is None and b"\ndata: " in body:
            first = time.perf_counter() - started
    total = time.perf_counter() - started
    writer.close()
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


def main() -> None:
    results: dict[str, Any] = {}
    with running_redis_server() as redis_port:
        client = redis.Redis(port=redis_port, decode_responses=True)
        cid = uuid.uuid4().hex
        log = RunLog(client, cid, uuid.uuid4().hex, ttl_seconds=3600, maxlen=100_000)
        ids = [log.append(RUN_QUEUED, {"message": "replay"}).id]
        for i in range(EVENTS - 2):
            ids.append(log.append(MESSAGE_DELTA, {"text": f"Day {i}: a museum, then "}).id)
        ids.append(log.append(RUN_COMPLETED, {"finish_reason": "stop", "usage": None}).id)
        env = {"REDIS_CONNECTION_STRING": f"127.0.0.1:{redis_port}"}
        base = f"/api/agents/travelplanner/conversations/{cid}/stream"
        with running_devhost(env) as (host, port, _):
            full, resumed = [], []
            for _ in range(REPEATS):
                _, total, count = asyncio.run(timed_get(host, port, f"{base}?cursor=0"))
                assert count == EVENTS
                full.append(total)
                first, _, count = asyncio.run(
                    timed_get(host, port, f"{base}?cursor={ids[EVENTS // 2]}")
                )
                assert count == EVENTS - EVENTS // 2 - 1
                resumed.append(first)
        results["replay_5000_ms"] = {
            "median": round(statistics.median(full) * 1000, 1),
            "best": round(min(full) * 1000, 1),
        }
        results["resume_mid_stream_first_event_ms"] = {
            "median": round(statistics.median(resumed) * 1000, 2),
            "best": round(min(resumed) * 1000, 2),
        }
        results["json_lines_in_process_5000"] = encoding_cost(client, cid)
    print_table(
        ["measure", "median ms", "best ms"],
        [
            [
                "replay 5,000 events over HTTP (SSE)",
                results["replay_5000_ms"]["median"],
                results["replay_5000_ms"]["best"],
            ],
            [
                "resume mid-stream: time to first event",
                results["resume_mid_stream_first_event_ms"]["median"],
                results["resume_mid_stream_first_event_ms"]["best"],
            ],
        ],
    )
    cost = results["json_lines_in_process_5000"]
    print(
        f"\nJSON lines for 5,000 events in process: spliced {cost['spliced_ms']} ms, "
        f"decoded and re-encoded {cost['decode_and_reencode_ms']} ms"
    )
    write_results("replay", results)


if __name__ == "__main__":
    main()
