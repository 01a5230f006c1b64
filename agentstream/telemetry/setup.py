"""Where telemetry goes, decided once at start-up from the environment.

- ``APPLICATIONINSIGHTS_CONNECTION_STRING`` set: the Azure Monitor OpenTelemetry distribution
  (traces, metrics and logs to Application Insights). With
  ``APPLICATIONINSIGHTS_AUTHENTICATION_STRING=Authorization=AAD[;ClientId=<id>]`` (what ``infra/``
  sets) it authenticates with Microsoft Entra ID: the managed identity with that client id, else
  ``DefaultAzureCredential``.
- else ``OTEL_EXPORTER_OTLP_ENDPOINT`` set: the OpenTelemetry SDK exporting over OTLP/HTTP (the
  exporters read the standard ``OTEL_*`` settings).
- else nothing: the API's no-op providers, and the libraries are not instrumented.

Either way the openai and httpx libraries are instrumented with their published instrumentations,
and so are the Redis clients that serve requests and write runs (:func:`instrument_redis`; not
the stream readers', whose blocking reads would each be a trace of their own). Message content
stays out of the openai spans unless ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace

SERVICE_NAME = "agentstream"
LOGGER_NAME = "agentstream"  # the loggers whose records are exported (and their children)

_configured: str | None = None


def configure_telemetry(env: Mapping[str, str] | None = None) -> str:
    """Set up exporting once per process; returns ``azure-monitor``, ``otlp`` or ``off``."""
    global _configured
    if _configured is not None:
        return _configured
    env = os.environ if env is None else env
    if env.get("APPLICATIONINSIGHTS_CONNECTION_STRING", "").strip():
        from azure.monitor.opentelemetry import configure_azure_monitor

        configure_azure_monitor(
            credential=_azure_monitor_credential(env),
            logger_name=LOGGER_NAME,
            # The distribution instruments web frameworks and database drivers this app does not
            # use; the three it does are instrumented below.
            instrumentation_options={
                name: {"enabled": False}
                for name in (
                    "azure_sdk",
                    "django",
                    "fastapi",
                    "flask",
                    "psycopg2",
                    "requests",
                    "urllib",
                    "urllib3",
                )
            },
        )
        _configured = "azure-monitor"
    elif env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
        _configure_otlp()
        _configured = "otlp"
    else:
        _configured = "off"
        return _configured
    # The request and run lines are INFO: exported even where the host logs at WARNING.
    if logging.getLogger(LOGGER_NAME).getEffectiveLevel() > logging.INFO:
        logging.getLogger(LOGGER_NAME).setLevel(logging.INFO)
    instrument_libraries()
    return _configured


def _azure_monitor_credential(env: Mapping[str, str]) -> Any:
    parts = dict(
        part.split("=", 1)
        for part in env.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", "").split(";")
        if "=" in part
    )
    if parts.get("Authorization", "").upper() != "AAD":
        return None  # the connection string's instrumentation key alone
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    client_id = parts.get("ClientId", "").strip()
    return ManagedIdentityCredential(client_id=client_id) if client_id else DefaultAzureCredential()


def _configure_otlp() -> None:
    from opentelemetry import metrics
    from opentelemetry._logs import set_logger_provider
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", SERVICE_NAME)})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(
        MeterProvider(
            resource=resource, metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())]
        )
    )
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
    set_logger_provider(logger_provider)
    logging.getLogger(LOGGER_NAME).addHandler(LoggingHandler(logger_provider=logger_provider))


def instrument_libraries() -> None:
    """The published instrumentations of the libraries the app talks through."""
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    global _exporting
    if not OpenAIInstrumentor().is_instrumented_by_opentelemetry:
        OpenAIInstrumentor().instrument()
    if not HTTPXClientInstrumentor().is_instrumented_by_opentelemetry:
        # Query strings carry tool arguments and API keys (the events tool's): not in spans.
        HTTPXClientInstrumentor().instrument(
            request_hook=_without_query, async_request_hook=_without_query_async
        )
    _exporting = True


# Set once telemetry goes somewhere (the libraries are then instrumented).
_exporting = False

_URL_ATTRIBUTES = ("url.full", "http.url")


def _without_query(span: Any, request: Any) -> None:
    if span is None or not span.is_recording():
        return
    url = request.url
    if isinstance(url, tuple):  # the raw (scheme, host, port, target) form
        scheme, host, port, target = (
            part.decode() if isinstance(part, bytes) else str(part) for part in url
        )
        bare = f"{scheme}://{host}:{port}{target.split('?', 1)[0]}"
    else:
        bare = str(url).split("?", 1)[0]
    for name in _URL_ATTRIBUTES:
        span.set_attribute(name, bare)


async def _without_query_async(span: Any, request: Any) -> None:
    _without_query(span, request)


def instrument_redis(client: Any) -> Any:
    """``client`` with the redis instrumentation, when telemetry is on; returns it."""
    if _exporting:
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        RedisInstrumentor.instrument_client(client)
    return client


def enabled() -> bool:
    """Whether telemetry goes anywhere (so work done only for it can be skipped otherwise)."""
    return _exporting
