"""What a run's record costs: ``python -m bench.run_record``.

The script that appends a run's terminal event also writes the run's record (its events, each
stretch of text merged), so only that one append pays. For runs of several sizes (``message.delta``
events of 16 characters, the size ``DELTA_FLUSH_CHARS=16`` gives; a tool call every 200): Redis's
own time in the terminal append (``INFO commandstats``, the script's ``EVALSHA``) beside a
non-terminal append's, and the record's size beside the run's entries in the stream
(``MEMORY USAGE``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import uuid

import redis
import redis.asyncio as aioredis

from agentstream.events import MESSAGE_DELTA, RUN_COMPLETED, RUN_STARTED, TOOL_CALL, TOOL_RESULT
from agentstream.streamlog import control
from agentstream.streamlog.keys import run_records_key, stream_key
from agentstream.streamlog.runlog import RunLog

from .common import print_table, running_redis_server, write_results

SIZES = (100, 1_000, 5_000)
LIMITS = control.Limits(ttl_seconds=3600, maxlen=100_000)


def evalsha_usec(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_evalsha", {}).get("usec", 0))


def one_run(port: int, deltas: int) -> dict[str, float]:
    client = redis.Redis(port=port, decode_responses=True)
    cid, run_id = uuid.uuid4().hex, uuid.uuid4().hex

    async def start() -> None:
        async with aioredis.Redis(port=port, decode_responses=True) as aclient:
            await control.start_run(
                aclient, cid, run_id, "bench", idempotency_key=None, must_exist=False, limits=LIMITS
            )

    asyncio.run(start())
    log = RunLog(client, cid, run_id, ttl_seconds=3600, maxlen=100_000)
    log.begin(uuid.uuid4().hex)
    log.append(RUN_STARTED, {"attempt": 1})
    client.config_resetstat()
    for i in range(deltas):
        if i and i % 200 == 0:
            log.append(TOOL_CALL, {"call_id": f"c{i}", "name": "tool", "arguments": "{}"})
            log.append(TOOL_RESULT, {"call_id": f"c{i}", "result": "x" * 200})
        log.append(MESSAGE_DELTA, {"text": f"token {i:09d} "})
    appends = int(client.info("commandstats")["cmdstat_evalsha"]["calls"])
    delta_usec = evalsha_usec(client) / appends
    client.config_resetstat()
    log.append(RUN_COMPLETED, {"usage": {"total_tokens": deltas}})
    terminal_usec = evalsha_usec(client)
    stream_bytes = client.memory_usage(stream_key(cid), samples=0) or 0
    record_bytes = len(client.hget(run_records_key(cid), run_id) or "")
    client.delete(stream_key(cid), run_records_key(cid))
    client.close()
    return {
        "delta_append_usec": delta_usec,
        "terminal_append_usec": terminal_usec,
        "stream_bytes": stream_bytes,
        "record_bytes": record_bytes,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    rows, results, loads = [], [], []
    with running_redis_server() as port:
        for deltas in SIZES:
            runs = []
            for _ in range(args.repeats):
                runs.append(one_run(port, deltas))
                loads.append(os.getloadavg()[0])
            row = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
            results.append({"deltas": deltas, **row, "runs": runs})
            rows.append(
                [
                    deltas,
                    row["delta_append_usec"],
                    row["terminal_append_usec"],
                    row["stream_bytes"],
                    row["record_bytes"],
                ]
            )
    print()
    print_table(
        [
            "deltas in the run",
            "delta append µs",
            "terminal append µs",
            "stream bytes",
            "record bytes",
        ],
        rows,
    )
    print(
        f"(Redis's own time per EVALSHA; medians of {args.repeats} runs; load average "
        f"{min(loads):.1f}–{max(loads):.1f})"
    )
    write_results("run_record", {"results": results, "loads": loads})


if __name__ == "__main__":
    main()
