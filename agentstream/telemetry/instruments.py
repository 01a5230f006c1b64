"""The app's tracer and metric instruments.

Created through the API's proxies at import: they record nothing until a provider is configured
(:mod:`.setup`), and then record into it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation

SCOPE = "agentstream"

tracer = trace.get_tracer(SCOPE)
meter = metrics.get_meter(SCOPE)

runs_started = meter.create_counter(
    "agentstream.runs.started", unit="{run}", description="Runs an entity began (first attempts)."
)
runs_ended = meter.create_counter(
    "agentstream.runs.ended",
    unit="{run}",
    description="Runs that ended, by agent, status and failure code.",
)
run_duration = meter.create_histogram(
    "agentstream.run.duration", unit="s", description="From the entity beginning a run to its end."
)
time_to_first_token_seconds = meter.create_histogram(
    "agentstream.run.time_to_first_token",
    unit="s",
    description="From the entity beginning a run to its first text written to the stream.",
)
active_streams = meter.create_up_down_counter(
    "agentstream.streams.active", unit="{stream}", description="Open stream responses (worker)."
)
token_latency = meter.create_histogram(
    "agentstream.stream.token_latency",
    unit="s",
    description="From an event being written to the stream to a reader sending it to its client.",
)
flush_size = meter.create_histogram(
    "agentstream.writer.flush_size",
    unit="{char}",
    description="Characters per message.delta the writer flushed.",
)
limit_rejections = meter.create_counter(
    "agentstream.limit.rejections",
    unit="{request}",
    description="Requests answered 429 because the caller was at a limit, by limit.",
)


def observe_hub_connections(lanes: Callable[[], Iterable[int]]) -> None:
    """Report the stream hub's Redis connections in use (``lanes()``: one count per hub)."""

    def observe(options: CallbackOptions) -> Iterable[Observation]:
        try:
            yield Observation(sum(lanes()))
        except RuntimeError:  # the hub changed while being counted: skip this collection
            return

    meter.create_observable_gauge(
        "agentstream.hub.connections",
        callbacks=[observe],
        unit="{connection}",
        description="Redis connections the worker's stream hub holds (subscribers, reads).",
    )
