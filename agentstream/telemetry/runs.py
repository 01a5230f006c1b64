"""One trace per run: the POST's span context travels in the run's input to the entity.

``run_carrier()`` (HTTP side) is added to the entity's run input; ``run_span()`` (entity side)
continues that trace, so the POST, the entity's run, each model call and tool call under it, and
the terminal event are one trace.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from .instruments import (
    run_duration,
    runs_ended,
    runs_started,
    time_to_first_token_seconds,
    tracer,
)

logger = logging.getLogger("agentstream.runs")

TRACE_FIELD = "trace"


def run_carrier() -> dict[str, Any]:
    """``{"trace": {"traceparent": ...}}`` for the current span, or ``{}`` when there is none."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return {TRACE_FIELD: carrier} if carrier else {}


@contextmanager
def run_span(
    agent: str, conversation_id: str, run_id: str, carrier: Mapping[str, str] | None
) -> Iterator[Span]:
    """The entity's run, as a child of the POST that queued it (``carrier``)."""
    parent = propagate.extract(dict(carrier)) if isinstance(carrier, Mapping) else None
    with tracer.start_as_current_span(
        f"run {agent}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes=_ids(agent, conversation_id, run_id),
    ) as span:
        yield span


def run_ended(
    agent: str,
    conversation_id: str,
    run_id: str,
    *,
    status: str,
    code: str | None,
    attempt: int,
    duration_seconds: float,
) -> None:
    """Metrics, the current (run) span's outcome, and the run's one log line."""
    attributes = {"agentstream.agent": agent, "agentstream.run.status": status}
    if code:
        attributes["agentstream.run.code"] = code
    if attempt == 1:
        runs_started.add(1, {"agentstream.agent": agent})
    runs_ended.add(1, attributes)
    run_duration.record(duration_seconds, attributes)
    span = trace.get_current_span()
    span.set_attributes({**attributes, "agentstream.run.attempt": attempt})
    span.add_event(f"run.{status}", {"agentstream.run.code": code} if code else {})
    if status == "failed":
        span.set_status(Status(StatusCode.ERROR, code or "failed"))
    logger.info(
        "run ended agent=%s conversation=%s run=%s status=%s code=%s attempt=%d duration_ms=%.0f",
        agent,
        conversation_id,
        run_id,
        status,
        code or "-",
        attempt,
        duration_seconds * 1000,
        extra={
            "agentstream.agent": agent,
            "agentstream.conversation_id": conversation_id,
            "agentstream.run_id": run_id,
            "agentstream.run.status": status,
            "agentstream.run.code": code or "",
        },
    )


def time_to_first_token(seconds: float) -> None:
    time_to_first_token_seconds.record(seconds)


@contextmanager
def tool_span(name: str) -> Iterator[Span]:
    """One tool call (its name only: arguments and results stay out of telemetry)."""
    with tracer.start_as_current_span(
        f"execute_tool {name}",
        kind=SpanKind.INTERNAL,
        attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name},
    ) as span:
        yield span


def _ids(agent: str, conversation_id: str, run_id: str) -> dict[str, str]:
    return {
        "agentstream.agent": agent,
        "agentstream.conversation_id": conversation_id,
        "agentstream.run_id": run_id,
    }
