"""A minimal OTLP/HTTP collector: receives what the app's OTLP exporters send, decoded.

Serves ``POST /v1/traces``, ``/v1/metrics`` and ``/v1/logs`` (protobuf, as the
``opentelemetry-exporter-otlp-proto-http`` exporters send them) and keeps what arrived.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .servers import serve_in_thread


class Collected:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans: list[dict[str, Any]] = []
        self.metric_names: set[str] = set()
        self.log_bodies: list[str] = []

    def traces(self, request: ExportTraceServiceRequest) -> None:
        with self.lock:
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    for span in scope.spans:
                        self.spans.append(
                            {
                                "name": span.name,
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent_id": span.parent_span_id.hex() or None,
                                "scope": scope.scope.name,
                                "attributes": {
                                    a.key: next(iter(MessageToDict(a.value).values()), None)
                                    for a in span.attributes
                                },
                                "links": [
                                    {"trace_id": link.trace_id.hex(), "span_id": link.span_id.hex()}
                                    for link in span.links
                                ],
                                "events": [event.name for event in span.events],
                            }
                        )

    def metrics(self, request: ExportMetricsServiceRequest) -> None:
        with self.lock:
            for resource in request.resource_metrics:
                for scope in resource.scope_metrics:
                    self.metric_names.update(metric.name for metric in scope.metrics)

    def logs(self, request: ExportLogsServiceRequest) -> None:
        with self.lock:
            for resource in request.resource_logs:
                for scope in resource.scope_logs:
                    self.log_bodies.extend(r.body.string_value for r in scope.log_records)


@contextmanager
def running_collector() -> Iterator[tuple[str, Collected]]:
    collected = Collected()
    kinds = {
        "traces": (ExportTraceServiceRequest, collected.traces),
        "metrics": (ExportMetricsServiceRequest, collected.metrics),
        "logs": (ExportLogsServiceRequest, collected.logs),
    }

    def route(kind: str) -> Route:
        message_type, keep = kinds[kind]

        async def receive(request: Request) -> Response:
            message = message_type()
            message.ParseFromString(await request.body())
            keep(message)
            return Response(b"", media_type="application/x-protobuf")

        return Route(f"/v1/{kind}", receive, methods=["POST"])

    app = Starlette(routes=[route(kind) for kind in kinds])
    with serve_in_thread(app) as url:
        yield url, collected
