"""The conversation entity's operation logic and state (DESIGN.md 5).

The entity function in ``function_app.py`` hands its context here. State (kept by Durable
Functions) is the chat history and a short record per run; everything a reader needs is in Redis.

Why Redis decides "already finished" too: if the worker dies after the terminal event was written
but before the entity state was committed, Durable delivers the operation again with the old
state. The stream log refuses writes after a run's terminal event, and the run's status there is
checked first, so the redelivery writes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import azure.durable_functions as df

from .agent import Message, TravelPlannerAgent
from .config import Settings, get_settings
from .events import (
    RUN_COMPLETED,
    RUN_RESTARTED,
    RUN_STARTED,
    TOOL_CALL,
    TOOL_RESULT,
)
from .model_client import shared_model_client
from .redis_clients import sync_redis
from .streamlog.writer import FINISHED_STATUSES, RunLog, StreamWriter, terminal_guard
from .tools import Toolbox, build_toolbox

logger = logging.getLogger(__name__)

ENTITY_NAME = "travelplanner"
RUN_OPERATION = "run"
RUN_RECORDS_KEPT = 50


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

    def completed(self, finish_reason: str, usage: dict[str, int] | None) -> None:
        self._writer.finish(RUN_COMPLETED, {"finish_reason": finish_reason, "usage": usage})


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

    def record(self, run_id: str, status: str, attempt: int | None) -> None:
        self.runs[run_id] = {"status": status, "attempt": attempt}
        while len(self.runs) > RUN_RECORDS_KEPT:
            self.runs.pop(next(iter(self.runs)))


_toolbox: Toolbox | None = None


def default_agent(settings: Settings) -> TravelPlannerAgent:
    """The agent on the process-wide model client and tool HTTP client."""
    global _toolbox
    client, model = shared_model_client(settings)
    if _toolbox is None:
        _toolbox = build_toolbox(settings.tools)
    return TravelPlannerAgent(client, model, _toolbox, max_tool_rounds=settings.max_tool_rounds)


def handle_operation(context: df.DurableEntityContext) -> None:
    """Entry point for the entity function."""
    state = ConversationState.from_entity(context.get_state(lambda: {}))
    operation = (context.operation_name or "").lower()
    if operation == RUN_OPERATION:
        payload = context.get_input()
        if not _valid_run_input(payload):
            logger.error("entity %s: malformed run input ignored", context.entity_key)
            context.set_result({"error": "malformed run input"})
            return
        run(context.entity_key, payload["run_id"], payload["message"], state)
        context.set_state(state.to_entity())
        context.set_result({"run_id": payload["run_id"], **state.runs[payload["run_id"]]})
    else:
        context.set_result({"error": f"unknown operation {context.operation_name!r}"})


def run(
    conversation_id: str,
    run_id: str,
    message: str,
    state: ConversationState,
    settings: Settings | None = None,
) -> None:
    """Run one turn of the conversation; update ``state`` in place."""
    settings = settings or get_settings()
    if state.runs.get(run_id, {}).get("status") in FINISHED_STATUSES:
        logger.info("run %s already finished (entity state); duplicate ignored", run_id)
        return
    log = RunLog(
        sync_redis(settings),
        conversation_id,
        run_id,
        ttl_seconds=settings.stream_ttl_seconds,
        maxlen=settings.stream_maxlen,
    )
    status = log.status()
    if status in FINISHED_STATUSES:
        logger.info("run %s already finished (stream log); duplicate ignored", run_id)
        state.record(run_id, status, None)
        return
    attempt = log.count_attempt()
    writer = StreamWriter(
        log, flush_chars=settings.delta_flush_chars, flush_ms=settings.delta_flush_ms
    )
    new_history: list[Message] | None = None
    with terminal_guard(writer):
        if attempt > 1:
            writer.event(RUN_RESTARTED, {"attempt": attempt})
        writer.event(RUN_STARTED, {"attempt": attempt})
        agent = default_agent(settings)
        sink = StreamSink(writer, settings.tools.result_max_chars)
        new_history = agent.run(state.history, message, sink)
    outcome = (writer.terminal_type or "").removeprefix("run.") or log.status() or "failed"
    if outcome == "completed" and new_history is not None:
        state.history = new_history
    state.record(run_id, outcome, attempt)


def _valid_run_input(payload: Any) -> bool:
    return (
        isinstance(payload, dict)
        and isinstance(payload.get("run_id"), str)
        and isinstance(payload.get("message"), str)
    )
