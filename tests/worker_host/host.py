"""The host side of the Functions worker protocol: a gRPC server and one worker process.

``WorkerHost`` does what the Functions host does with a language worker: starts the process with
the host's arguments, waits for ``StartStream``, sends ``WorkerInitRequest`` (and fails with the
worker's own message when the app cannot be loaded), asks for the function metadata, loads every
function, then sends invocations and pairs each response with its request by invocation id.
Everything runs on one asyncio loop (the harness's).
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from ..redis_server import free_port
from . import protocol

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
HOST_VERSION = "4.1040.0-harness"
MAX_MESSAGE = 2**31 - 1
STARTUP_SECONDS = 120  # the worker imports the app and its SDKs; slow on a busy machine

messages, services = protocol.load()


class WorkerInitFailed(RuntimeError):
    """The worker answered ``WorkerInitRequest`` with a failure; the message is the worker's."""


@dataclass(frozen=True)
class FunctionInfo:
    """One indexed function, as the worker reported it."""

    function_id: str
    name: str
    bindings: list[dict[str, Any]]
    metadata: Any  # RpcFunctionMetadata

    @property
    def trigger(self) -> dict[str, Any]:
        return next(b for b in self.bindings if b["type"].endswith("Trigger"))

    def inputs_of_type(self, binding_type: str) -> list[str]:
        return [b["name"] for b in self.bindings if b["type"] == binding_type]


class WorkerHost:
    def __init__(self, python: Path, app_directory: Path, env: dict[str, str], log: Path) -> None:
        self.python = python
        self.app_directory = app_directory
        self.env = env
        self.log = log
        self.worker_id = str(uuid.uuid4())
        self.request_id = str(uuid.uuid4())
        self.capabilities: dict[str, str] = {}
        self.functions: dict[str, FunctionInfo] = {}
        self.process: subprocess.Popen[bytes] | None = None
        self._server: grpc.aio.Server | None = None
        self._outgoing: asyncio.Queue[Any] = asyncio.Queue()
        self._started = asyncio.Event()
        self._pending: dict[tuple[str, str], asyncio.Future[Any]] = {}
        self._exited: asyncio.Future[int] | None = None

    @property
    def http_uri(self) -> str:
        """The worker's own web server (the ``HttpUri`` capability)."""
        return self.capabilities["HttpUri"]

    async def start(self) -> None:
        port = free_port()
        options = [
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.max_receive_message_length", MAX_MESSAGE),
        ]
        self._server = grpc.aio.server(options=options)
        services.add_FunctionRpcServicer_to_server(_Servicer(self), self._server)
        self._server.add_insecure_port(f"127.0.0.1:{port}")
        await self._server.start()
        self._spawn_worker(port)
        await self._until(self._started.wait(), "StartStream", STARTUP_SECONDS)
        await self._initialize()
        await self._load_functions()

    async def stop(self) -> None:
        """Kill the worker (it keeps its HTTP port open when the host goes away) and the server."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            await asyncio.to_thread(self.process.wait)
        await self._outgoing.put(None)
        if self._server is not None:
            await self._server.stop(grace=None)

    async def invoke(
        self, function: FunctionInfo, inputs: list[Any], invocation_id: str | None = None
    ) -> Any:
        """Send one ``InvocationRequest``; return the worker's ``InvocationResponse``."""
        invocation_id = invocation_id or str(uuid.uuid4())
        request = messages.InvocationRequest(
            invocation_id=invocation_id, function_id=function.function_id, input_data=inputs
        )
        key = ("invocation", invocation_id)
        return await self._request("invocation_request", request, key, timeout=None)

    def function(self, name: str) -> FunctionInfo:
        return self.functions[name]

    # -- the conversation ----------------------------------------------------------------------

    def _spawn_worker(self, port: int) -> None:
        command = [
            str(self.python),
            str(HERE / "worker.py"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workerId",
            self.worker_id,
            "--requestId",
            self.request_id,
            "--grpcMaxMessageLength",
            str(MAX_MESSAGE),
        ]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=self.app_directory, env=self.env, stdout=log, stderr=log
            )
        self._exited = asyncio.ensure_future(asyncio.to_thread(self.process.wait))

    async def _initialize(self) -> None:
        request = messages.WorkerInitRequest(
            host_version=HOST_VERSION,
            capabilities={"RpcHttpBodyOnly": "true", "RpcHttpTriggerMetadataRemoved": "true"},
            worker_directory=str(HERE),
            function_app_directory=str(self.app_directory),
        )
        response = await self._request("worker_init_request", request, ("init", ""))
        if response.result.status != messages.StatusResult.Success:
            raise WorkerInitFailed(response.result.exception.message or response.result.result)
        self.capabilities = dict(response.capabilities)

    async def _load_functions(self) -> None:
        request = messages.FunctionsMetadataRequest(function_app_directory=str(self.app_directory))
        response = await self._request("functions_metadata_request", request, ("metadata", ""))
        if response.result.status != messages.StatusResult.Success:
            raise RuntimeError(f"indexing failed: {response.result.exception.message}")
        for metadata in response.function_metadata_results:
            load = messages.FunctionLoadRequest(function_id=metadata.function_id, metadata=metadata)
            loaded = await self._request(
                "function_load_request", load, ("load", metadata.function_id)
            )
            if loaded.result.status != messages.StatusResult.Success:
                raise RuntimeError(f"{metadata.name} did not load: {loaded.result.exception}")
            self.functions[metadata.name] = FunctionInfo(
                function_id=metadata.function_id,
                name=metadata.name,
                bindings=[json.loads(raw) for raw in metadata.raw_bindings],
                metadata=metadata,
            )

    async def _request(
        self, kind: str, payload: Any, key: tuple[str, str], timeout: float | None = STARTUP_SECONDS
    ) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        await self._outgoing.put(
            messages.StreamingMessage(request_id=self.request_id, **{kind: payload})
        )
        try:
            return await self._until(future, kind, timeout)
        finally:
            self._pending.pop(key, None)

    async def _until(self, awaitable: Any, what: str, timeout: float | None) -> Any:
        """Wait for the worker's answer, but not past the worker's exit or ``timeout``."""
        assert self._exited is not None
        waiter = asyncio.ensure_future(awaitable)
        done, _ = await asyncio.wait(
            {waiter, self._exited}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if waiter in done:
            return waiter.result()
        waiter.cancel()
        reason = "exited" if self._exited in done else f"did not answer in {timeout} s"
        raise RuntimeError(f"the worker {reason} while waiting for {what}:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def received(self, message: Any) -> None:
        kind = message.WhichOneof("content")
        if kind == "start_stream":
            self._started.set()
            return
        if kind == "rpc_log":
            logger.info("worker: %s", message.rpc_log.message)
            return
        keys = {
            "worker_init_response": lambda m: ("init", ""),
            "function_metadata_response": lambda m: ("metadata", ""),
            "function_load_response": lambda m: ("load", m.function_id),
            "invocation_response": lambda m: ("invocation", m.invocation_id),
        }
        if kind not in keys:
            logger.warning("unexpected %s from the worker", kind)
            return
        payload = getattr(message, kind)
        future = self._pending.get(keys[kind](payload))
        if future is not None and not future.done():
            future.set_result(payload)

    async def outgoing_messages(self) -> AsyncIterator[Any]:
        while (message := await self._outgoing.get()) is not None:
            yield message


class _Servicer(services.FunctionRpcServicer):
    """The ``EventStream`` the worker connects to: our queue out, its messages in."""

    def __init__(self, host: WorkerHost) -> None:
        self._host = host

    async def EventStream(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        reader = asyncio.ensure_future(self._read(request_iterator))
        try:
            async for message in self._host.outgoing_messages():
                yield message
        finally:
            reader.cancel()

    async def _read(self, request_iterator: Any) -> None:
        async for message in request_iterator:
            self._host.received(message)
