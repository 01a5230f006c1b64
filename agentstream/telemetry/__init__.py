"""OpenTelemetry: traces, metrics and logs of what the app does (docs/operating.md).

The code here only uses the OpenTelemetry API; where the data goes is decided once at start-up by
:func:`configure_telemetry` (Azure Monitor, OTLP, or nowhere). Spans carry the agent, the
conversation and the run ids, never message text or tool arguments.
"""

from .instruments import (
    active_streams,
    flush_size,
    limit_rejections,
    observe_hub_connections,
    token_latency,
    tracer,
)
from .runs import run_carrier, run_ended, run_span, time_to_first_token, tool_span
from .setup import configure_telemetry, enabled, instrument_libraries, instrument_redis

__all__ = [
    "active_streams",
    "configure_telemetry",
    "enabled",
    "flush_size",
    "instrument_libraries",
    "instrument_redis",
    "limit_rejections",
    "observe_hub_connections",
    "run_carrier",
    "run_ended",
    "run_span",
    "time_to_first_token",
    "token_latency",
    "tool_span",
    "tracer",
]
