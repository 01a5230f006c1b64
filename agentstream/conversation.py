"""The conversation entity's operation logic and state (docs/architecture.md, section 2).

Each agent's entity function (registered by :mod:`agentstream.functions`) hands its context and
its agent here. State (kept by Durable Functions) is the chat history and a short record per run;
everything a reader needs is in Redis.

Why Redis decides "already finished" too: if the worker dies after the terminal event was written
but before the entity state was committed, Durable delivers the operation again with the old
state. The stream log refuses writes after a run's terminal event, and the run's status there is
checked first, so the redelivery writes nothing; the history messages the run added were kept with
its terminal event, so the redelivery restores them into the state instead of losing the turn.
The same holds for a run a request ended because its lease ran out (``worker_lost``).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import azure.durable_functions as df
import redis

from . import telemetry
from .agent import AgentRunner, Message
from .agents.base import AgentDefinition
from .config import Settings, get_settings
from .entity_protocol import DELETE_OPERATION, RUN_OPERATION
from .events import (
    RUN_COMPLETED,
    RUN_RESTARTED,
    RUN_STARTED,
    TOOL_CALL,
    TOOL_RESULT,
)
from .redis_clients import sync_redis
from .streamlog.requeue import QueuedRun, Requeue
from .streamlog.retry import StoreUnavailable
from .streamlog.runlog import RunLog
from .streamlog.scripts import FINISHED_STATUSES, RUN_RECORDS_KEPT
from .streamlog.writer import StreamWriter, terminal_guard

logger = logging.getLogger(__name__)


class StreamSink:
    """Connects the agent's output to the stream writer."""

    def __init__(self, writer: StreamWriter, result_max_chars: int) -> None:
        self._writer = writer
        self._result_max_chars = result_max_chars

    def text(self, delta: str) -> None:
        self._writer.text(delta)

    def tick(self) -> None:
        # Text buffered before a long run of tool-call chunks still goes out on time.
        self._writer.flush_if_due()

    def tool_call(self, call_id: str, name: str, arguments: str) -> None:
        self._writer.event(TOOL_CALL, {"call_id": call_id, "name": name, "arguments": arguments})

    def tool_result(self, call_id: str, name: str, result: str) -> None:
        if len(result) > self._result_max_chars:
            result = result[: self._result_max_chars] + "…[truncated]"
        self._writer.event(TOOL_RESULT, {"call_id": call_id, "name": name, "result": result})

    def completed(
        self, finish_reason: str, usage: dict[str, int] | None, turn: list[Message]
    ) -> None:
        # The turn goes with the terminal event, so it survives a lost entity commit.
        self._writer.finish(
            RUN_COMPLETED, {"finish_reason": finish_reason, "usage": usage}, turn=turn
        )


@dataclass
class ConversationState:
    history: list[Message]
    runs: dict[str, dict[str, Any]]

    @classmethod
    def from_entity(cls, raw: Any) -> ConversationState:
        raw = raw if isinstance(raw, dict) else {}
        return cls(history=list(raw.get("history") or []), runs=dict(raw.get("runs") or {}))

    def to_entity(self) -> dict[str, Any]:
        return {"history": self.history, "runs": self.runs}

    def finished_runs(self, most: int = 5) -> list[str]:
        """The newest runs this state records as finished (their turns are in ``history``)."""
        done = [rid for rid, record in self.runs.items() if record["status"] in FINISHED_STATUSES]
        return done[-most:]

    def record(self, run_id: str, status: str, attempt: int | None) -> None:
        self.runs[run_id] = {"status": status, "attempt": attempt}
        while len(self.runs) > RUN_RECORDS_KEPT:
            self.runs.pop(next(iter(self.runs)))


def handle_operation(context: df.DurableEntityContext, agent: AgentDefinition) -> None:
    """Entry point for an agent's entity function: one operation of a batch."""
    operation = (context.operation_name or "").lower()
    if operation == DELETE_OPERATION:
        # set_result before destruct_on_exit: a result (or state) set after it would undo it.
        context.set_result({"deleted": True})
        context.destruct_on_exit()
        return
    if operation != RUN_OPERATION:
        context.set_result({"error": f"unknown operation {context.operation_name!r}"})
        return
    try:
        payload = context.get_input(expected_type=dict)
    except (TypeError, ValueError):  # a null or undecodable input
        payload = None
    if not _valid_run_input(payload):
        logger.error("entity %s: malformed run input ignored", context.entity_key)
        context.set_result({"error": "malformed run input"})
        return
    state = ConversationState.from_entity(context.get_state(lambda: {}))
    run_id = payload["run_id"]
    # The POST's span context came with the input: the run continues the POST's trace.
    with telemetry.run_span(agent.info.name, context.entity_key, run_id, payload.get("trace")):
        changed = run(
            context.entity_key,
            run_id,
            payload["message"],
            state,
            agent=agent,
            queued=QueuedRun.from_payload(payload.get("queued")),
        )
    if changed:
        context.set_state(state.to_entity())
    context.set_result({"run_id": run_id, **state.runs.get(run_id, {"status": "unknown"})})


def run(
    conversation_id: str,
    run_id: str,
    message: str,
    state: ConversationState,
    settings: Settings | None = None,
    *,
    agent: AgentDefinition,
    redis_client: redis.Redis | None = None,
    runner: AgentRunner | None = None,
    queued: QueuedRun | None = None,
) -> bool:
    """Run one turn of the conversation; update ``state`` in place.

    Returns whether ``state`` changed (nothing to save for a duplicate or an unknown run, so a
    run meeting a deleted conversation does not bring its entity back). The Redis client defaults
    to the process-wide one, the runner to ``agent.runner(settings)``. ``queued`` is what the
    HTTP side's ``START`` wrote (from the signal): a run a failover lost is written again from it.
    """
    settings = settings or get_settings()
    started = time.monotonic()
    history_max = agent.history_max_messages or settings.history_max_messages
    if state.runs.get(run_id, {}).get("status") in FINISHED_STATUSES:
        logger.info("run %s already finished (entity state); duplicate ignored", run_id)
        return False
    log = RunLog(
        redis_client or sync_redis(settings),
        conversation_id,
        run_id,
        ttl_seconds=settings.stream_ttl_seconds,
        maxlen=settings.stream_maxlen,
        lease_seconds=settings.run_lease_seconds,
        retry_seconds=settings.redis_retry_seconds,
        min_replicas=settings.topology.min_replicas,
        replica_wait_ms=settings.topology.replica_wait_ms,
        requeue=None
        if queued is None
        else Requeue(
            queued,
            message,
            agent.info.name,
            conversation_ttl_ms=settings.conversation_ttl_seconds * 1000,
            start_deadline_ms=int(settings.run_start_deadline_seconds * 1000),
            run_record_ttl_ms=settings.run_record_ttl_seconds * 1000,
        ),
    )
    try:
        begun = log.begin(uuid.uuid4().hex, committed_runs=state.finished_runs())
    except StoreUnavailable:
        # Nothing can be written; the run's start deadline (or lease) lets a request end it.
        logger.error("run %s could not begin: the stream store is unreachable", run_id)
        return False
    if begun.outcome == "unknown":
        # Not re-created either (streamlog/requeue.py says when a missing run is written again).
        logger.info("run %s is unknown (conversation deleted or expired); ignored", run_id)
        return False
    if begun.outcome == "finished":
        # The run ended before this delivery: an earlier attempt whose entity state was lost
        # (the worker died after the terminal event), or a run a request ended.
        logger.info("run %s already finished (stream log); restoring its record", run_id)
        if begun.status == "completed" and begun.turn:
            state.history = bounded_history([*state.history, *begun.turn], history_max)
        state.record(run_id, begun.status or "failed", None)
        return True
    writer = StreamWriter(
        log,
        flush_chars=settings.delta_flush_chars,
        flush_ms=settings.delta_flush_ms,
        heartbeat_seconds=settings.run_lease_seconds / 3,
    )
    new_history: list[Message] | None = None
    with writer.pacing(), terminal_guard(writer):
        if begun.attempt > 1:
            writer.event(RUN_RESTARTED, {"attempt": begun.attempt})
        writer.event(RUN_STARTED, {"attempt": begun.attempt})
        runner = runner or agent.runner(settings)
        sink = StreamSink(writer, settings.tools.result_max_chars)
        history = bounded_history(state.history, history_max)
        new_history = runner.run(history, message, sink)
    outcome = (writer.terminal_type or "").removeprefix("run.") or "failed"
    telemetry.run_ended(
        agent.info.name,
        conversation_id,
        run_id,
        status=outcome,
        code=writer.terminal_code,
        attempt=begun.attempt,
        duration_seconds=time.monotonic() - started,
    )
    if outcome == "completed" and new_history is not None:
        state.history = bounded_history(new_history, history_max)
    state.record(run_id, outcome, begun.attempt)
    return True


def bounded_history(history: list[Message], max_messages: int) -> list[Message]:
    """The newest whole turns that fit in ``max_messages``.

    A turn starts at a user message and keeps its assistant and tool messages with it, so a
    tool call is never separated from its result. The latest turn is kept even when it alone is
    longer than the bound.
    """
    if len(history) <= max_messages:
        return history
    starts = [i for i, message in enumerate(history) if message.get("role") == "user"]
    for start in starts:
        if len(history) - start <= max_messages:
            return history[start:]
    return history[starts[-1] :] if starts else history[-max_messages:]


def _valid_run_input(payload: Any) -> bool:
    return (
        isinstance(payload, dict)
        and isinstance(payload.get("run_id"), str)
        and isinstance(payload.get("message"), str)
    )
