"""Benchmarks of the stream log against a real redis-server: ``make bench``.

Prints numbers and ratios; asserts nothing. Measures:
1. writer: Redis round trips per flushed entry, and how much delta coalescing saves;
2. live latency: from a writer's append to each of N concurrent readers receiving it;
3. catch-up: how fast a reader replays a long finished stream.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid

import redis
import redis.asyncio as aioredis

from agentstream.events import MESSAGE_DELTA, RUN_COMPLETED, RUN_QUEUED
from agentstream.streamlog.cursor import Cursor
from agentstream.streamlog.reader import open_stream
from agentstream.streamlog.writer import RunLog, StreamWriter
from tests.redis_server import running_redis_server

TOKENS = 4000  # deltas of a long answer, ~4 characters each


def bench_writer(client: redis.Redis) -> None:
    print("1. writer: one round trip per flushed entry, coalescing")
    for flush_chars in (1, 16, 64, 256):
        cid = uuid.uuid4().hex
        log = RunLog(client, cid, "run", ttl_seconds=600, maxlen=100_000)
        writer = StreamWriter(log, flush_chars=flush_chars, flush_ms=60_000)
        client.config_resetstat()
        started = time.perf_counter()
        for i in range(TOKENS):
            writer.text(f"t{i % 10}  ")
        writer.finish(RUN_COMPLETED, {"finish_reason": "stop", "usage": None})
        elapsed = time.perf_counter() - started
        stats = client.info("commandstats")
        calls = sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("evalsha", "eval"))
        entries = writer.entries_written
        print(
            f"   flush at {flush_chars:>3} chars: {TOKENS} deltas -> {entries:>5} entries "
            f"({TOKENS / entries:6.1f}x fewer), {calls / entries:.2f} round trips/entry, "
            f"{entries / elapsed:8.0f} entries/s, {TOKENS / elapsed:8.0f} deltas/s"
        )


async def bench_live_latency(port: int, sync: redis.Redis, readers: int) -> None:
    client = aioredis.Redis(port=port, decode_responses=True, max_connections=readers + 8)
    cid = uuid.uuid4().hex
    log = RunLog(sync, cid, "run", ttl_seconds=600, maxlen=100_000)
    log.append(RUN_QUEUED, {"message": "bench"})
    sent_at: dict[int, float] = {}
    latencies: list[float] = []

    async def reader() -> None:
        opened = await open_stream(client, cid, Cursor(None), keepalive_seconds=15, max_seconds=60)
        async for event in opened.items():
            if event is not None and event.type == MESSAGE_DELTA:
                latencies.append(time.perf_counter() - sent_at[event.seq])

    tasks = [asyncio.create_task(reader()) for _ in range(readers)]
    while sync.info("clients")["blocked_clients"] < readers:
        await asyncio.sleep(0.01)
    messages = 50
    for i in range(messages):
        sent_at[i + 1] = time.perf_counter()
        await asyncio.to_thread(log.append, MESSAGE_DELTA, {"text": f"delta {i}"})
        await asyncio.sleep(0.01)
    await asyncio.to_thread(log.append, RUN_COMPLETED, {"finish_reason": "stop", "usage": None})
    await asyncio.gather(*tasks)
    await client.aclose()
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p95 = latencies[int(len(latencies) * 0.95) - 1] * 1000
    print(
        f"   {readers:>4} readers: {len(latencies):>6} deliveries, p50 {p50:6.2f} ms, "
        f"p95 {p95:6.2f} ms, max {latencies[-1] * 1000:6.2f} ms"
    )


async def bench_catch_up(port: int, sync: redis.Redis) -> None:
    client = aioredis.Redis(port=port, decode_responses=True)
    cid = uuid.uuid4().hex
    log = RunLog(sync, cid, "run", ttl_seconds=600, maxlen=100_000)
    total = 10_000
    pipe_log_start = time.perf_counter()
    for i in range(total - 1):
        log.append(MESSAGE_DELTA, {"text": f"delta number {i} "})
    log.append(RUN_COMPLETED, {"finish_reason": "stop", "usage": None})
    write_seconds = time.perf_counter() - pipe_log_start
    for batch in (10, 100, 1000):
        sync.config_resetstat()
        started = time.perf_counter()
        opened = await open_stream(
            client, cid, Cursor("0-0"), keepalive_seconds=15, max_seconds=60, batch_size=batch
        )
        count = sum([1 async for item in opened.items() if item is not None])
        elapsed = time.perf_counter() - started
        xreads = sync.info("commandstats").get("cmdstat_xread", {}).get("calls", 0)
        print(
            f"   batch {batch:>4}: {count} events in {elapsed * 1000:7.1f} ms "
            f"({count / elapsed:9.0f} events/s, {xreads} XREADs, "
            f"{count / max(xreads, 1):6.1f} events/XREAD)"
        )
    print(
        f"   (writing those {total} entries one by one took {write_seconds * 1000:.0f} ms, "
        f"{total / write_seconds:.0f} entries/s)"
    )
    await client.aclose()


def main() -> None:
    with running_redis_server() as port:
        sync = redis.Redis(port=port, decode_responses=True)
        print(f"redis-server {sync.info('server')['redis_version']} on port {port}\n")
        bench_writer(sync)
        print("\n2. live latency: append -> every blocked reader has it")
        for readers in (1, 50, 200):
            asyncio.run(bench_live_latency(port, sync, readers))
        print("\n3. catch-up: replaying a finished 10,000-event stream")
        asyncio.run(bench_catch_up(port, sync))


if __name__ == "__main__":
    main()
