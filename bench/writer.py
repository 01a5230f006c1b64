"""The writer's Redis round trips: ``python -m bench.writer``.

Round trips are counted on the client's connection (one per packet sent and answered: a Lua
script call or a pipeline counts once), for

- a model streaming four-character tokens at 50 per second through the app's StreamWriter with
  its default coalescing settings (real time, 6 seconds; ``--flush-ms 20,22,25`` for other
  ``DELTA_FLUSH_MS`` values), with how long each token waited in the buffer before its append
  began (p50 / p99 / max), and
- 4,000 tokens as fast as possible at several flush sizes (what coalescing saves).
"""

from __future__ import annotations

import argparse
import time
import uuid
from typing import Any

import redis

from agentstream.config import Settings
from agentstream.events import MESSAGE_DELTA, RUN_COMPLETED, RUN_QUEUED, RUN_STARTED
from agentstream.streamlog.runlog import RunLog
from agentstream.streamlog.writer import StreamWriter

from .common import print_table, running_redis_server, summary, write_results
from .writer_process import token

RATE = 50.0
SECONDS = 6.0
FAST_TOKENS = 4000


class CountingConnection(redis.Connection):
    round_trips = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.round_trips += 1
        super().send_packed_command(command, check_health)


def queued_run(client: redis.Redis) -> RunLog:
    """A run as the HTTP function leaves it (``run.queued`` written)."""
    log = RunLog(client, uuid.uuid4().hex, "run", ttl_seconds=600, maxlen=100_000)
    log.append(RUN_QUEUED, {"message": "bench"})
    return log


class FlushTimes(RunLog):
    """The app's RunLog, noting when each text append began and the text it carried."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.flushes: list[tuple[float, int]] = []  # (began, characters)

    def append(
        self, event_type: str, data: dict[str, Any], turn: list[dict[str, Any]] | None = None
    ) -> Any:
        if event_type == MESSAGE_DELTA:
            self.flushes.append((time.monotonic(), len(data["text"])))
        return super().append(event_type, data, turn)


def paced(client: redis.Redis, flush_ms: int) -> dict[str, Any]:
    defaults = Settings.from_env()  # DELTA_FLUSH_CHARS from the environment
    log = FlushTimes(client, uuid.uuid4().hex, "run", ttl_seconds=600, maxlen=100_000)
    log.append(RUN_QUEUED, {"message": "bench"})
    log.begin("bench")
    writer = StreamWriter(log, flush_chars=defaults.delta_flush_chars, flush_ms=flush_ms)
    tokens = int(RATE * SECONDS)
    produced: list[float] = []
    with writer.pacing():  # the entity's timer flushing: text waits at most DELTA_FLUSH_MS
        writer.event(RUN_STARTED, {"attempt": 1})
        before = CountingConnection.round_trips
        entries_before = writer.entries_written
        start = time.monotonic()
        for index in range(tokens):
            delay = start + index / RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            produced.append(time.monotonic())
            writer.text(token(index))
        writer.finish(RUN_COMPLETED, {"finish_reason": "stop", "usage": None})
    trips = CountingConnection.round_trips - before
    entries = writer.entries_written - entries_before
    # Each token's wait: from its production to the start of the append that carried it.
    waits, next_token = [], 0
    for began, characters in log.flushes:
        carried = characters // len(token(0))
        waits += [began - made for made in produced[next_token : next_token + carried]]
        next_token += carried
    return {
        "case": f"{RATE:.0f} tokens/s, flush by {flush_ms} ms (timer)",
        "tokens": tokens,
        "entries": entries,
        "round_trips": trips,
        "round_trips_per_token": round(trips / tokens, 3),
        "round_trips_per_entry": round(trips / entries, 3),
        "buffer_wait": summary(waits),
    }


def fast(client: redis.Redis, flush_chars: int) -> dict[str, Any]:
    writer = StreamWriter(queued_run(client), flush_chars=flush_chars, flush_ms=60_000)
    before = CountingConnection.round_trips
    started = time.perf_counter()
    for index in range(FAST_TOKENS):
        writer.text(token(index))
    writer.finish(RUN_COMPLETED, {"finish_reason": "stop", "usage": None})
    elapsed = time.perf_counter() - started
    trips = CountingConnection.round_trips - before
    entries = writer.entries_written
    return {
        "case": f"as fast as possible, flush at {flush_chars} chars",
        "tokens": FAST_TOKENS,
        "entries": entries,
        "round_trips": trips,
        "round_trips_per_token": round(trips / FAST_TOKENS, 3),
        "round_trips_per_entry": round(trips / entries, 3),
        "tokens_per_second": round(FAST_TOKENS / elapsed),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--flush-ms",
        default=str(Settings.from_env().delta_flush_ms),
        help="DELTA_FLUSH_MS values for the paced case, comma-separated (default: the setting)",
    )
    args = parser.parse_args(argv)
    with running_redis_server() as port:
        pool = redis.ConnectionPool(
            port=port, decode_responses=True, connection_class=CountingConnection
        )
        client = redis.Redis(connection_pool=pool)
        client.ping()  # the script is loaded by the first append; count from a warm connection
        results = [paced(client, int(ms)) for ms in args.flush_ms.split(",")]
        results += [fast(client, chars) for chars in (1, 16, 64, 256)]
        client.close()
    print_table(
        [
            "case",
            "tokens",
            "entries",
            "round trips",
            "per token",
            "per entry",
            "buffer wait p50 ms",
            "p99",
            "max",
        ],
        [
            [
                r["case"],
                r["tokens"],
                r["entries"],
                r["round_trips"],
                r["round_trips_per_token"],
                r["round_trips_per_entry"],
                *(
                    (r["buffer_wait"][k] for k in ("p50_ms", "p99_ms", "max_ms"))
                    if "buffer_wait" in r
                    else ("-", "-", "-")
                ),
            ]
            for r in results
        ],
    )
    write_results("writer", {"results": results})


if __name__ == "__main__":
    main()
