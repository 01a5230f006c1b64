"""The agents' side of the latency benchmark, in its own process: tokens at a steady rate.

``python -m bench.writer_process PORT RATE TOKENS OUT cid:run [cid:run ...]`` writes, per stream,
``run.started``, ``TOKENS`` four-character tokens at ``RATE`` per second through the app's
:class:`StreamWriter` (``DELTA_FLUSH_CHARS`` / ``DELTA_FLUSH_MS`` from the environment, else
the defaults), then ``run.completed``; it records when each token was produced and when each
entry's append began (``time.monotonic``, shared by every process on the machine) and writes them
to ``OUT`` as JSON.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

import redis

from agentstream.config import Settings
from agentstream.events import RUN_COMPLETED, RUN_STARTED
from agentstream.streamlog.runlog import Appended, RunLog
from agentstream.streamlog.writer import StreamWriter


class TimedRunLog(RunLog):
    """The app's RunLog, noting when each append began and how many it made."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.append_started: dict[int, float] = {}

    def append(
        self, event_type: str, data: dict[str, Any], turn: list[dict[str, Any]] | None = None
    ) -> Appended:
        started = time.monotonic()
        appended = super().append(event_type, data, turn)
        self.append_started[appended.seq] = started
        return appended


def token(index: int) -> str:
    return f"{index % 10_000:04d}"


def write_stream(
    client: redis.Redis, cid: str, run_id: str, rate: float, tokens: int, out: dict[str, Any]
) -> None:
    defaults = Settings.from_env()
    log = TimedRunLog(client, cid, run_id, ttl_seconds=600, maxlen=100_000)
    log.begin(f"bench-{run_id}")  # as the entity does: attempt 1, the lease taken
    writer = StreamWriter(
        log, flush_chars=defaults.delta_flush_chars, flush_ms=defaults.delta_flush_ms
    )
    produced: list[float] = []
    with writer.pacing():  # the entity's timer flushing and heartbeat
        writer.event(RUN_STARTED, {"attempt": 1})
        start = time.monotonic()
        for index in range(tokens):
            delay = start + index / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            produced.append(time.monotonic())
            writer.text(token(index))
        writer.finish(RUN_COMPLETED, {"finish_reason": "stop", "usage": None})
    out[cid] = {
        "token_produced": produced,
        "append_started": {str(k): v for k, v in log.append_started.items()},
        "entries": writer.entries_written,
    }


def main(argv: list[str]) -> None:
    port, rate, tokens, path, *streams = argv
    # "cluster:PORT": a Redis Cluster reached through one of its nodes (bench.topologies).
    if port.startswith("cluster:"):
        client: redis.Redis = redis.RedisCluster(
            host="127.0.0.1", port=int(port[8:]), decode_responses=True
        )
    else:
        client = redis.Redis(port=int(port), decode_responses=True)
    out: dict[str, Any] = {}
    threads = []
    for stream in streams:
        cid, run_id = stream.split(":")
        thread = threading.Thread(
            target=write_stream, args=(client, cid, run_id, float(rate), int(tokens), out)
        )
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    with open(path, "w") as file:
        json.dump(out, file)


if __name__ == "__main__":
    main(sys.argv[1:])
