"""``python -m agentstream_dev.devhost``: serve ``function_app.py`` without the Functions host."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import uvicorn

from agentstream.config import ConfigError

from . import telemetry
from .app import STOP_CONNECTIONS_SECONDS, create_app, load_function_app
from .stopping import cancel_runs

BANNER = """\
==========================================================================================
 DEVELOPMENT HOST - this is not the Azure Functions runtime.
 It serves function_app.py's HTTP functions and runs its durable entities in memory
 (state is lost on restart, function keys are not checked). Use `func start` or Azure
 for the real thing.
=========================================================================================="""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "7071")))
    parser.add_argument("--app", default="function_app", help="module with the function app")
    parser.add_argument(
        "--durable-unavailable",
        action="store_true",
        help="answer 503 to entity signals, as if the Durable backend were down",
    )
    parser.add_argument(
        "--telemetry",
        choices=("memory",),
        help="record traces and metrics in memory, served at " + telemetry.PATH,
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.path.insert(0, os.getcwd())
    # Before the app is loaded: its instruments and clients then record into these providers.
    recorder = telemetry.MemoryTelemetry() if args.telemetry == "memory" else None
    try:
        function_app = load_function_app(args.app)
    except ConfigError as exc:
        print(f"Configuration error: {exc}", file=sys.stderr)
        return 2
    app = create_app(
        function_app,
        durable_available=not args.durable_unavailable,
        on_stop=cancel_runs,
        extra_routes=[recorder.route()] if recorder is not None else [],
    )
    print(BANNER, flush=True)
    print(
        f"  entity batches run on {app.state.entities.max_workers} threads"
        " (PYTHON_THREADPOOL_THREAD_COUNT)",
        flush=True,
    )
    for function in app.state.http_functions:
        if function.methods:  # not the catch-all, which answers what no route takes
            methods = ",".join(sorted(function.methods))
            print(f"  {methods:<9} http://{args.host}:{args.port}{function.path}", flush=True)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        timeout_graceful_shutdown=STOP_CONNECTIONS_SECONDS,
    )
    if app.state.entities.busy():
        # A run that did not stop in time is left to its lease; its thread is not waited for.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
