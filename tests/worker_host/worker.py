"""A thin language-worker entry point around ``azure-functions-runtime``, for the harness.

The Functions host runs Python 3.13 apps through a small "proxy worker" that ships only inside
the host's bundle: it connects to the host over gRPC and hands every message to
``azure-functions-runtime``, the library that holds the behaviour (indexing, binding conversion,
the HTTP server for streaming, the thread pool). This is the project's own minimal version of that
glue, so the harness can drive the real library the way the host does.

Started by the harness as the host starts a worker::

    python worker.py --host 127.0.0.1 --port N --workerId ID --requestId ID
                     --grpcMaxMessageLength N

It runs until the host closes the stream (or kills it).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import grpc
import protocol

logger = logging.getLogger("harness.worker")


@dataclass
class RuntimeRequest:
    """What the runtime's handlers take: the message and the host address and protocol module."""

    request: Any
    properties: dict[str, Any] = field(default_factory=dict)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workerId", dest="worker_id", required=True)
    parser.add_argument("--requestId", dest="request_id", required=True)
    parser.add_argument("--grpcMaxMessageLength", dest="max_message", type=int, default=2**31 - 1)
    return parser.parse_args(argv)


class Worker:
    def __init__(self, args: argparse.Namespace, messages: Any, grpc_module: Any) -> None:
        self.args = args
        self.messages = messages
        self.grpc_module = grpc_module
        self.outgoing: asyncio.Queue[Any] = asyncio.Queue()
        self.tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        options = [
            ("grpc.max_send_message_length", self.args.max_message),
            ("grpc.max_receive_message_length", self.args.max_message),
        ]
        target = f"{self.args.host}:{self.args.port}"
        async with grpc.aio.insecure_channel(target, options=options) as channel:
            stub = self.grpc_module.FunctionRpcStub(channel)
            start = self.messages.StreamingMessage(
                request_id=self.args.request_id,
                start_stream=self.messages.StartStream(worker_id=self.args.worker_id),
            )
            await self.outgoing.put(start)
            call = stub.EventStream(self._outgoing())
            async for message in call:
                if message.WhichOneof("content") == "worker_terminate":
                    break
                self._spawn(self._handle(message))

    async def _outgoing(self):  # type: ignore[no-untyped-def]
        while True:
            yield await self.outgoing.get()

    def _spawn(self, coroutine: Any) -> None:
        # Invocations run concurrently, as in the real worker: a streaming HTTP function or a
        # long entity batch must not hold up the next message.
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _handle(self, message: Any) -> None:
        import azure_functions_runtime as runtime

        kind = message.WhichOneof("content")
        wrapped = RuntimeRequest(message, {"host": self.args.host, "protos": self.messages})
        reply: dict[str, Any]
        if kind == "worker_init_request":
            directory = message.worker_init_request.function_app_directory
            if directory and directory not in sys.path:
                sys.path.insert(0, directory)
            runtime.start_threadpool_executor()
            reply = {"worker_init_response": await runtime.worker_init_request(wrapped)}
        elif kind == "functions_metadata_request":
            response = await runtime.functions_metadata_request(wrapped)
            reply = {"function_metadata_response": response}
        elif kind == "function_load_request":
            reply = {"function_load_response": await runtime.function_load_request(wrapped)}
        elif kind == "invocation_request":
            reply = {"invocation_response": await runtime.invocation_request(wrapped)}
        elif kind == "worker_status_request":
            reply = {"worker_status_response": self.messages.WorkerStatusResponse()}
        else:
            logger.warning("ignoring a %s message", kind)
            return
        await self.outgoing.put(
            self.messages.StreamingMessage(request_id=message.request_id, **reply)
        )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="worker %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    messages, grpc_module = protocol.load()
    try:
        asyncio.run(Worker(args, messages, grpc_module).run())
    except grpc.aio.AioRpcError as exc:
        logger.info("the host closed the stream: %s", exc.code())
    return 0


if __name__ == "__main__":
    sys.exit(main())
