"""The Durable extension's side, as the development host and the worker harness stand in for it:
the ``durableClient`` binding's JSON, and the entity endpoint its client signals."""

from __future__ import annotations

import json
import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .entities import EntityHost


def durable_client_binding(webhooks_url: str, rpc_base_url: str, task_hub: str) -> str:
    """The JSON the Functions host passes for a ``durableClient`` binding.

    ``rpc_base_url`` is where the SDK's client sends entity signals
    (``{rpc_base_url}entities/{name}/{key}?op=``).
    """
    instance = f"{webhooks_url}/instances/INSTANCEID"
    orchestrator = f"{webhooks_url}/orchestrators/{{functionName}}"
    return json.dumps(
        {
            "taskHubName": task_hub,
            "creationUrls": {
                "createNewInstancePostUri": orchestrator,
                "createAndWaitOnNewInstancePostUri": orchestrator,
            },
            "managementUrls": {
                "id": "INSTANCEID",
                "statusQueryGetUri": instance,
                "sendEventPostUri": f"{instance}/raiseEvent/{{eventName}}",
                "terminatePostUri": f"{instance}/terminate?reason={{text}}",
                "purgeHistoryDeleteUri": instance,
            },
            "baseUrl": webhooks_url,
            "requiredQueryStringParameters": "",
            "rpcBaseUrl": rpc_base_url,
            "httpBaseUrl": webhooks_url,
            "maxGrpcMessageSizeInBytes": 0,
            "grpcHttpClientTimeout": "00:01:40",
            "invocationId": str(uuid.uuid4()),
        }
    )


def entity_routes(entities: EntityHost, rpc_path: str, available: bool = True) -> list[Route]:
    """``POST {rpc_path}/entities/{name}/{key}?op=`` queues an operation with the posted body as
    its input; ``GET`` reads the entity's state (404 when none). ``available=False`` makes the
    signal answer 503, as a Durable backend that is down."""

    async def signal(request: Request) -> Response:
        if not available:
            return JSONResponse({"message": "durable backend unavailable (simulated)"}, 503)
        name, key = request.path_params["name"], request.path_params["key"]
        operation = request.query_params.get("op")
        if not entities.knows(name):
            return JSONResponse({"message": f"no entity function named {name}"}, 404)
        if not operation:
            return JSONResponse({"message": "the op query parameter is required"}, 400)
        entities.signal(name, key, operation, (await request.body()).decode() or None)
        return Response(status_code=202)

    async def read_state(request: Request) -> Response:
        state = entities.state(request.path_params["name"], request.path_params["key"])
        return Response(status_code=404) if state is None else JSONResponse(state)

    path = rpc_path + "/entities/{name}/{key}"
    return [Route(path, signal, methods=["POST"]), Route(path, read_state, methods=["GET"])]
