"""Run control for the HTTP side: start, cancel, end stale runs, delete, read status.

Everything here is asynchronous (the HTTP functions run on the worker's event loop) and each
decision is one atomic script.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from ..config import Settings
from ..events import RUN_CANCELLED, RUN_FAILED, TERMINAL_TYPES, Event, dumps_line
from . import scripts
from .keys import conversation_key, conversation_keys, deleted_key, meta_key
from .replication import call_replicated_async, replicas_needed
from .requeue import QueuedRun
from .scripts import RUN_RECORDS_KEPT, append_args, request_digest

logger = logging.getLogger(__name__)

_GLOBAL_IDEMPOTENCY_PREFIX = "agent-idem:"


@dataclass(frozen=True)
class Limits:
    """The lifetimes and caps every run-control script needs, from the settings."""

    ttl_seconds: int
    maxlen: int
    conversation_ttl_seconds: int = 30 * 86_400
    start_deadline_seconds: float = 300.0
    min_replicas: int | None = 0  # None: 1 when the server reports replicas (REDIS_MIN_REPLICAS)
    replica_wait_ms: int = 200
    runs_kept: int = RUN_RECORDS_KEPT
    run_record_ttl_seconds: int = 30 * 86_400

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            ttl_seconds=settings.stream_ttl_seconds,
            maxlen=settings.stream_maxlen,
            conversation_ttl_seconds=settings.conversation_ttl_seconds,
            start_deadline_seconds=settings.run_start_deadline_seconds,
            min_replicas=settings.topology.min_replicas,
            replica_wait_ms=settings.topology.replica_wait_ms,
            run_record_ttl_seconds=settings.run_record_ttl_seconds,
        )

    @property
    def base_args(self) -> list[int]:
        return [self.ttl_seconds * 1000, self.maxlen]


@dataclass(frozen=True)
class RunStart:
    """The outcome of :func:`start_run`."""

    outcome: str  # "started" | "duplicate" | "mismatch" | "busy" | "unknown"
    run_id: str | None = None
    cursor: str | None = None
    # For "started": what START wrote, for the entity's signal (re-created if a failover lost it).
    queued: QueuedRun | None = None


# One Script object per client and source: registering one hashes the source, which every request
# (and every idle reader's keep-alive tick) would otherwise do again.
_registered: weakref.WeakKeyDictionary[aioredis.Redis, dict[str, AsyncScript]] = (
    weakref.WeakKeyDictionary()
)


def _script(client: aioredis.Redis, source: str) -> AsyncScript:
    known = _registered.setdefault(client, {})
    script = known.get(source)
    if script is None:
        script = known[source] = client.register_script(source)
    return script


def registered_script(client: aioredis.Redis, source: str) -> AsyncScript:
    """``source`` as a script registered once per client (for scripts outside this module)."""
    return _script(client, source)


async def _run(
    client: aioredis.Redis, source: str, conversation_id: str, limits: Limits, *args: Any
) -> Any:
    script = _script(client, source)
    return await script(keys=conversation_keys(conversation_id), args=[*limits.base_args, *args])


async def _run_replicated(
    client: aioredis.Redis, source: str, conversation_id: str, limits: Limits, *args: Any
) -> Any:
    """:func:`_run`, answering only once a replica has the script's writes (``WAIT``, in the
    same round trip), so a failover right after cannot take them back unnoticed."""
    keys = conversation_keys(conversation_id)
    replicas = await replicas_needed(client, keys[0], limits.min_replicas)
    reply, confirmed = await call_replicated_async(
        client,
        _script(client, source),
        keys,
        [*limits.base_args, *args],
        replicas=replicas,
        timeout_ms=limits.replica_wait_ms,
    )
    if confirmed < replicas:
        # Not waited for any longer: a run START queued is re-created from the entity's signal
        # if a failover loses it (requeue.py).
        logger.warning(
            "no replica confirmed a run-control write within %d ms", limits.replica_wait_ms
        )
    return reply


async def start_run(
    client: aioredis.Redis,
    conversation_id: str,
    run_id: str,
    message: str,
    *,
    idempotency_key: str | None,
    must_exist: bool,
    limits: Limits,
    owner: str = "",
) -> RunStart:
    """Take the conversation's run lock and write ``run.queued``, atomically.

    A run whose lease or start deadline has passed is ended first, so a dead worker never keeps
    the conversation locked. A new conversation records ``owner``; an existing one that belongs to
    another owner is ``"unknown"``, as if it did not exist.
    """
    ts = int(time.time() * 1000)
    reply = await _run_replicated(
        client,
        scripts.START,
        conversation_id,
        limits,
        run_id,
        idempotency_key or "",
        request_digest(message),
        dumps_line({"message": message}),
        ts,
        limits.conversation_ttl_seconds * 1000,
        "1" if must_exist else "0",
        int(limits.start_deadline_seconds * 1000),
        owner,
        limits.runs_kept,
        limits.run_record_ttl_seconds * 1000,
    )
    outcome = reply[0]
    if outcome == "started":
        queued = QueuedRun(reply[1], ts, idempotency_key or "", owner, not must_exist)
        return RunStart("started", run_id, reply[1], queued)
    if outcome == "duplicate":
        return RunStart("duplicate", reply[1], reply[2])
    if outcome == "busy":
        return RunStart("busy", reply[1])
    return RunStart(outcome)


async def claim_new_conversation(
    client: aioredis.Redis,
    idempotency_key: str,
    message: str,
    conversation_id: str,
    ttl_seconds: int,
    owner: str = "",
) -> str | None:
    """The conversation an ``Idempotency-Key`` on the new-conversation route belongs to.

    The first request with a key claims it for its freshly made conversation id; a retry with
    the same message gets that same id back (and then :func:`start_run` returns the same run).
    ``None``: the key was used for another message, and must not hand that conversation out.
    Keys are scoped to their ``owner``: another caller's same key is another key.
    """
    key = _GLOBAL_IDEMPOTENCY_PREFIX + owner_scope(owner) + idempotency_key
    digest = request_digest(message)
    claim = f"{conversation_id} {digest}"
    # Two steps rather than SET NX GET, which needs Redis 7.
    if await client.set(key, claim, nx=True, ex=ttl_seconds):
        return conversation_id
    existing = await client.get(key)
    if existing is None:  # expired between the two steps
        return conversation_id if await client.set(key, claim, nx=True, ex=ttl_seconds) else None
    owner, _, owner_digest = existing.partition(" ")
    return owner if owner_digest == digest else None


def owner_scope(owner: str) -> str:
    """A short, fixed-length stand-in for an owner in key names ("" for no owner)."""
    return hashlib.sha256(owner.encode()).hexdigest()[:24] + ":" if owner else ""


async def fail_queued_run(
    client: aioredis.Redis,
    conversation_id: str,
    run_id: str,
    *,
    idempotency_key: str | None,
    code: str,
    message: str,
    limits: Limits,
) -> None:
    """End a run that never reached the entity (its signal failed) and release the lock.

    The idempotency key is forgotten too, so the client's retry starts a fresh run.
    """
    if idempotency_key is not None:
        await client.hdel(meta_key(conversation_id), f"idem:{idempotency_key}")
    await _script(client, scripts.APPEND)(
        keys=conversation_keys(conversation_id),
        args=append_args(
            run_id,
            RUN_FAILED,
            {"code": code, "message": message},
            ttl_ms=limits.ttl_seconds * 1000,
            maxlen=limits.maxlen,
        ),
    )


async def request_cancel(
    client: aioredis.Redis, conversation_id: str, run_id: str, limits: Limits
) -> str | None:
    """Set the run's cancel flag if it is still going.

    Returns the run's status, ``"ended"`` when the run's worker was gone and this call ended it
    with ``run.cancelled``, or None for an unknown run.
    """
    status = await _run(client, scripts.CANCEL, conversation_id, limits, run_id, uuid.uuid4().hex)
    return status or None


async def end_stale_run(client: aioredis.Redis, conversation_id: str, limits: Limits) -> bool:
    """End the active run if its lease or start deadline has passed.

    Returns False when the stream is gone (deleted or expired), True otherwise.
    """
    return await _run(client, scripts.REAP, conversation_id, limits) != -1


async def delete_conversation(client: aioredis.Redis, conversation_id: str, limits: Limits) -> bool:
    """Remove the stream, the meta hash, the record and the run records; False when there was no
    conversation.

    An active run is ended with ``run.cancelled`` first, in its own step, so that readers blocked
    on the stream receive it before the stream goes; a reader that was still behind finds it in
    the deleted mark (:func:`deletion_event`).
    """
    ts = int(time.time() * 1000)
    ended = await _run(client, scripts.END_FOR_DELETE, conversation_id, limits, ts)
    if not ended:
        return False
    mark = "1"
    if len(ended) > 1:
        entry_id, run, seq = ended[1:]
        fields = {"type": RUN_CANCELLED, "run": run, "seq": seq, "ts": str(ts), "data": "{}"}
        mark = json.dumps([entry_id, fields])
    # The mark keeps a run signalled before the delete from being re-created (requeue.py).
    async with client.pipeline(transaction=True) as pipe:
        pipe.delete(*conversation_keys(conversation_id))
        pipe.set(deleted_key(conversation_id), mark, px=int(limits.start_deadline_seconds * 1000))
        await pipe.execute()
    return True


async def deletion_event(client: aioredis.Redis, conversation_id: str) -> Event | None:
    """The ``run.cancelled`` a delete ended the conversation's run with, while the mark lasts.

    A live reader that was behind when the stream went never read it from the stream; this is
    the same entry (id, run, ``seq``), so it ends that reader's response as the stream would have.
    """
    mark = await client.get(deleted_key(conversation_id))
    if not mark or mark == "1":
        return None
    entry_id, fields = json.loads(mark)
    return Event.from_entry(entry_id, fields)


async def conversation_exists(client: aioredis.Redis, conversation_id: str) -> bool:
    return bool(await client.exists(conversation_key(conversation_id), meta_key(conversation_id)))


async def turns_not_in_state(
    client: aioredis.Redis, conversation_id: str, runs_in_state: set[str]
) -> list[dict[str, Any]]:
    """The history messages of completed runs the entity's state does not hold yet.

    The terminal event (with the run's turn) is written before the entity commits its state, so a
    client that read ``run.completed`` can ask for the history before the commit lands. The meta
    hash keeps each completed run's turn until the entity confirms it (``turn:<run>``); these
    turns, in the order the runs were queued, complete the state's history.
    """
    mkey = meta_key(conversation_id)
    queued = (await client.hget(mkey, "runs") or "").split()
    missing = [run for run in queued if run not in runs_in_state]
    if not missing:
        return []
    fields = [field for run in missing for field in (f"status:{run}", f"turn:{run}")]
    values = await client.hmget(mkey, fields)
    messages: list[dict[str, Any]] = []
    for status, turn in zip(values[::2], values[1::2], strict=True):
        if status == "completed" and turn:
            messages.extend(m for m in json.loads(turn) if isinstance(m, dict))
    return messages


async def conversation_status(
    client: aioredis.Redis, conversation_id: str, limits: Limits
) -> dict[str, Any] | None:
    """The conversation's runs and where its stream stands; None when it does not exist.

    A conversation whose stream expired still has a status (no runs, no last event) until its
    record expires.
    """
    await end_stale_run(client, conversation_id, limits)
    skey, mkey, ckey, _ = conversation_keys(conversation_id)
    async with client.pipeline(transaction=True) as pipe:
        pipe.hgetall(mkey)
        pipe.xrevrange(skey, count=1)
        pipe.pttl(skey)
        pipe.pttl(ckey)
        meta, last, ttl_ms, conversation_ttl_ms = await pipe.execute()
    if not meta and conversation_ttl_ms < 0:
        return None
    runs = []
    for field, status in meta.items():
        if not field.startswith("status:"):
            continue
        run_id = field.removeprefix("status:")
        runs.append(
            {
                "run_id": run_id,
                "status": status,
                "created_ms": int(meta.get(f"created:{run_id}", 0)),
                "attempts": int(meta.get(f"attempts:{run_id}", 0)),
                "cancel_requested": f"cancel:{run_id}" in meta,
            }
        )
    # In the order START queued them (``created_ms`` ties within a millisecond); records from
    # before START kept that order come first.
    queued = {run_id: index for index, run_id in enumerate(meta.get("runs", "").split())}
    runs.sort(key=lambda run: (queued.get(run["run_id"], -1), run["created_ms"]))
    del runs[: -limits.runs_kept]  # records written before START bounded them
    last_event = None
    if last:
        last_id, last_fields = last[0]
        last_event = {
            "id": last_id,
            "type": last_fields.get("type"),
            "terminal": last_fields.get("type") in TERMINAL_TYPES,
        }
    return {
        "active_run": meta.get("active_run"),
        "latest_run": meta.get("latest_run"),
        "latest_run_cursor": meta.get("latest_start"),
        "last_event": last_event,
        "expires_in_seconds": _seconds(ttl_ms),
        "conversation_expires_in_seconds": _seconds(conversation_ttl_ms),
        "runs": runs,
    }


def _seconds(ttl_ms: int | None) -> int | None:
    return max(0, ttl_ms // 1000) if ttl_ms and ttl_ms > 0 else None
