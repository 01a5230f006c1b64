"""The meta hash keeps the records of the newest runs only, so it does not grow with every run."""

from __future__ import annotations

import uuid

import redis
import redis.asyncio as aioredis

from agentstream.events import RUN_COMPLETED, RUN_STARTED
from agentstream.streamlog import control
from agentstream.streamlog.keys import meta_key

from .streamlog_helpers import new_conversation_id, run_log

KEPT = 3
LIMITS = control.Limits(ttl_seconds=600, maxlen=10_000, runs_kept=KEPT)
PER_RUN = ("status", "seq", "created", "attempts", "token", "last", "turn", "key", "cancel")


async def start(client: aioredis.Redis, cid: str, n: int) -> control.RunStart:
    return await control.start_run(
        client,
        cid,
        uuid.uuid4().hex,
        f"message {n}",
        idempotency_key=f"key-{n}",
        must_exist=False,
        limits=LIMITS,
    )


async def test_queuing_a_run_drops_the_records_of_runs_beyond_the_bound(
    redis_client: redis.Redis, redis_port: int
) -> None:
    cid = new_conversation_id()
    runs = []
    async with aioredis.Redis(port=redis_port, decode_responses=True) as client:
        for n in range(KEPT + 2):
            started = await start(client, cid, n)
            assert started.outcome == "started"
            assert started.run_id is not None
            runs.append(started.run_id)
            await control.request_cancel(client, cid, started.run_id, LIMITS)  # a cancel: field
            log = run_log(redis_client, cid, started.run_id)  # the entity runs it
            log.begin(token=f"delivery-{n}")
            log.append(RUN_STARTED, {"attempt": 1})
            log.append(RUN_COMPLETED, {"finish_reason": "stop"}, turn=[{"role": "user"}])

        fields = redis_client.hkeys(meta_key(cid))
        per_run = {f.partition(":")[2] for f in fields if f.partition(":")[0] in PER_RUN}
        assert per_run == set(runs[-KEPT:])
        assert sorted(f for f in fields if f.startswith("idem:")) == [
            f"idem:key-{n}" for n in range(2, KEPT + 2)
        ]

        status = await control.conversation_status(client, cid, LIMITS)
        assert status is not None
        assert [run["run_id"] for run in status["runs"]] == runs[-KEPT:]

        # A kept run's key still replays; the key of a dropped run is free again.
        replay = await start(client, cid, KEPT + 1)
        assert (replay.outcome, replay.run_id) == ("duplicate", runs[-1])
        reused = await start(client, cid, 0)
        assert reused.outcome == "started"
        assert reused.run_id not in runs
